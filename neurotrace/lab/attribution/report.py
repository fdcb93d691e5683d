"""attribute results into the run: JSON record, CSV tables, figures, summary."""

from typing import Any

from torch import Tensor

from neurotrace.lab.attribution.dla import Attribution
from neurotrace.lab.attribution.figures import FIGURES
from neurotrace.lab.attribution.schema import (
    CONVENTION,
    RESULTS_FILE,
    AttributeRequest,
    AttributeResult,
    AttributeResults,
    AttributionPatching,
    Share,
)


def _top(table: Tensor, k: int, letter: str) -> list[Share]:
    order = table.flatten().abs().argsort(descending=True)[:k].tolist()
    return [Share(name=f"L{i // table.shape[1]}{letter}{i % table.shape[1]}", value=float(table.flatten()[i]))
            for i in order]


def _summary(request: AttributeRequest, metric: str, attr: Attribution, comps: list[Share], heads: list[Share],
             neurons: list[Share], texts: list[str], patching: AttributionPatching | None) -> str:
    what = f"logit({texts[0]!r}) - logit({texts[1]!r})" if len(texts) > 1 else f"centred logit of {texts[0]!r}"
    ranked = sorted((c for c in comps if c.name != "bias"), key=lambda c: -abs(c.value))[:3]
    text = (f"Direct logit attribution of {what} = {attr.metric:.3g} in {request.model} at the last position of "
            f"{request.prompt!r}. Largest components: " + ", ".join(f"{c.name} {c.value:+.3g}" for c in ranked)
            + f"; top head {heads[0].name} {heads[0].value:+.3g}; top neuron {neurons[0].name} "
            f"{neurons[0].value:+.3g}. Convention: {CONVENTION}.")
    if patching:
        h = patching.heads[0]
        exact = "" if h.exact is None else f", exactly {h.exact:+.3g}"
        text += (f" Attribution patching (metric {patching.metric_corrupt:.3g} corrupt -> {patching.metric_clean:.3g}"
                 f" clean): top head {h.name} estimate {h.estimate:+.3g}{exact}.")
    return text


def write_report(run: Any, request: AttributeRequest, attr: Attribution, texts: list[str],
                 patching: AttributionPatching | None) -> AttributeResult:
    metric = "logit_diff" if len(texts) > 1 else "centred_logit"
    comps = [Share(name=k, value=v) for k, v in attr.components.items()] + [Share(name="bias", value=attr.constant)]
    heads, neurons = _top(attr.heads, request.top_k, "H"), _top(attr.neurons, request.top_k, "N")
    rec = AttributeResults(model=request.model, prompt=request.prompt, target=texts[0],
                           contrast=texts[1] if len(texts) > 1 else None, metric=metric, metric_value=attr.metric,
                           convention=CONVENTION, components=comps, heads=attr.heads.tolist(),
                           head_bias=attr.head_bias.tolist(), top_neurons=neurons, patching=patching)
    run.write_json(RESULTS_FILE, rec.model_dump(mode="json"))
    run.write_csv("tables/components.csv", [c.model_dump() for c in comps])
    run.write_csv("tables/heads.csv", [{"layer": layer, "head": h, "value": v} for layer, row in
                                       enumerate(attr.heads.tolist()) for h, v in enumerate(row)])
    run.write_npy("arrays/neurons.npy", attr.neurons.numpy())
    figures = [run.write_figure(f"figures/{name}.png", fn(rec)) for name, fn in FIGURES.items()]
    summary = _summary(request, metric, attr, comps, heads, neurons, texts, patching)
    run.set_summary(summary)
    layer, unit = neurons[0].name[1:].split("N")
    nxt = (f"Call patch with a clean/corrupt pair to test the top components causally, or clamp_sweep / "
           f"intervene with neuron '{layer}:{unit}'.")
    return AttributeResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures,
                           next=nxt, model=request.model, target=texts[0], contrast=rec.contrast, metric=metric,
                           metric_value=attr.metric, convention=CONVENTION, components=comps, top_heads=heads,
                           top_neurons=neurons, patching=patching)
