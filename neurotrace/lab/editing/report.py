"""Turn an edit into its metrics, artifacts and result.

Written files:

* ``arrays/delta.safetensors``: the weight delta per edited parameter (its own name and layout), metadata
  ``base_model``, ``base_fingerprint``, ``method``; ``<model>@edit:<run_id>`` loads the model plus this.
* ``tables/edits.csv``: per fact, p(new) and p(true) before and after, success, |value change|.
* ``tables/generations.csv``: the texts fluency and consistency are read from, before and after.
* ``edit_results.json`` (input of :mod:`neurotrace.lab.editing.figures`), ``report.md``,
  ``figures/metrics.png`` and, with ``sweep_layers``, ``figures/localisation_vs_editing.png``.
"""

from dataclasses import dataclass
from typing import Any

import torch

from neurotrace.lab.editing.counterfact.cases import Case
from neurotrace.lab.editing.counterfact.measure import CaseIds, State, consistency, fluency
from neurotrace.lab.editing.counterfact.metrics import mean, rate
from neurotrace.lab.editing.figures import FIGURES, RESULTS_FILE
from neurotrace.lab.editing.method.rome import native_delta
from neurotrace.lab.editing.method.updates import Update, param_name
from neurotrace.lab.editing.method.vectors import down_proj
from neurotrace.lab.editing.schema import (
    EditRequest,
    EditResult,
    EditResults,
    FactEdit,
    MetricPair,
    Metrics,
    Sweep,
)
from neurotrace.lab.model.weights.derived import edited_name
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.runs import Run


@dataclass
class Outcome:
    model: str
    lm: LoadedModel
    method: str
    layers: list[int]
    layer_source: str
    cases: list[Case]
    ids: list[CaseIds]
    before: list[State]
    after: list[State]
    refs: list[list[str]]
    updates: list[Update]
    unknown: list[str]
    covariance: dict[str, str | int]
    sweep: Sweep | None
    notes: list[str]


def _pair(fn: Any, o: Outcome) -> MetricPair:
    return MetricPair(before=fn(o.before), after=fn(o.after))


def metrics(o: Outcome) -> Metrics:
    """CounterFact's metrics over every edited fact, before and after."""
    flat = lambda states, f: [x for s in states for x in f(s)]  # noqa: E731

    def unrelated(states: list[State]) -> Any:
        return rate([a == b for s0, s in zip(o.before, states, strict=True)
                     for a, b in zip(s0.unrelated_top, s.unrelated_top, strict=True)])

    def consist(states: list[State]) -> Any:
        others = [t for s in o.before + o.after for t in s.texts]
        return mean([x for s, r in zip(states, o.refs, strict=True) if r for x in consistency(s, r, others)])

    return Metrics(efficacy=_pair(lambda s: rate(flat(s, State.efficacy)), o),
                   generalisation=_pair(lambda s: rate(flat(s, State.generalisation)), o),
                   specificity=_pair(lambda s: rate(flat(s, State.specificity)), o),
                   unrelated=_pair(unrelated, o),
                   fluency=_pair(lambda s: mean(flat(s, fluency)), o),
                   consistency=_pair(consist, o))


def _facts(o: Outcome) -> list[FactEdit]:
    per_fact = o.updates if o.method == "rome" else [o.updates[-1]] * len(o.cases)
    return [FactEdit(id=c.id, prompt=c.template.format(c.subject), subject=c.subject, target_true=c.target_true or "",
                     target_new=c.target_new, layers=o.layers, p_new_before=b.p_new[0], p_new_after=a.p_new[0],
                     p_true_before=b.p_true[0], p_true_after=a.p_true[0], success=a.p_new[0] > a.p_true[0],
                     delta_norm=u.value_norm)
            for c, b, a, u in zip(o.cases, o.before, o.after, per_fact, strict=True)]


def _delta(o: Outcome) -> dict[str, torch.Tensor]:
    sums: dict[int, torch.Tensor] = {}
    for u in o.updates:
        sums[u.layer] = sums[u.layer] + u.delta if u.layer in sums else u.delta.clone()
    return {param_name(o.lm, layer): native_delta(down_proj(o.lm, layer), d) for layer, d in sums.items()}


def write_outputs(run: Run, request: EditRequest, o: Outcome) -> EditResult:
    m = metrics(o)
    facts = _facts(o)
    name = edited_name(o.model, run.run_id)
    notes = list(o.notes)
    if o.method == "rome" and len(o.cases) > 1:
        notes.append("rome: each fact was edited and measured alone; the edited model holds the sum of the "
                     f"{len(o.cases)} independent updates (use memit to edit them together)")
    results = EditResults(model=o.model, edited_model=name, method=request.method, layers=o.layers,
                          layer_source=o.layer_source, facts=facts, unknown=o.unknown, metrics=m,
                          covariance=o.covariance, sweep=o.sweep, notes=notes)
    results_uri = run.write_json(RESULTS_FILE, results.model_dump(mode="json"))
    delta_uri = run.write_tensors("arrays/delta.safetensors", _delta(o), metadata={
        "base_model": o.model, "base_fingerprint": o.lm.fingerprint, "method": request.method})
    run.write_csv("tables/edits.csv", [f.model_dump() for f in facts])
    gens = [{"fact": c.id, "when": when, "text": t} for c, b, a in zip(o.cases, o.before, o.after, strict=True)
            for when, s in (("before", b), ("after", a)) for t in s.texts]
    if gens:
        run.write_csv("tables/generations.csv", gens, ["fact", "when", "text"])
    report = run.write_text("report.md", _markdown(results))
    figures = [run.write_figure(f"figures/{k}.png", fn(results)) for k, fn in FIGURES.items()
               if k != "localisation_vs_editing" or results.sweep is not None]
    summary = _summary(results)
    run.set_summary(summary)
    return EditResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures,
                      next=_next(results, report), model=o.model, edited_model=name, method=request.method,
                      layers=o.layers, layer_source=o.layer_source, n_edited=len(o.cases), unknown=o.unknown,
                      metrics=m, sweep=o.sweep, delta=delta_uri, results=results_uri)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _summary(r: EditResults) -> str:
    m = r.metrics
    text = (f"{r.method.upper()} edited {len(r.facts)} fact(s) of {r.model} at layer(s) {r.layers} ({r.layer_source}). "
            f"Efficacy {_f(m.efficacy.before.value)} -> {_f(m.efficacy.after.value)} (n={m.efficacy.after.n}), "
            f"generalisation {_f(m.generalisation.before.value)} -> {_f(m.generalisation.after.value)} "
            f"(n={m.generalisation.after.n}), neighbourhood specificity {_f(m.specificity.before.value)} -> "
            f"{_f(m.specificity.after.value)} (n={m.specificity.after.n}), unrelated kept "
            f"{_f(m.unrelated.after.value)} (n={m.unrelated.after.n}), fluency {_f(m.fluency.before.value)} -> "
            f"{_f(m.fluency.after.value)}. The edited model is {r.edited_model!r}.")
    if r.unknown:
        text += f" Not edited (the model does not know them): {', '.join(r.unknown[:5])}" + (
            f" and {len(r.unknown) - 5} more." if len(r.unknown) > 5 else ".")
    if r.sweep is not None:
        s = r.sweep
        text += (f" Sweep: best edit layer {s.best_edit_layer}, located layer {s.located_layer}; "
                 f"r(indirect effect, edit gain) = {_f(s.pearson_pairs)} over {s.n_pairs} (fact, layer) pairs.")
    return text


def _next(r: EditResults, report: str) -> str:
    return (f"Trace the edited fact on the edited model (trace with models=['{r.edited_model}'] and the same "
            f"facts) to see where the new answer is read from; read {report} for each fact.")


def _row(name: str, p: MetricPair) -> str:
    def cell(s: Any) -> str:
        band = f" [{s.low:.2f}, {s.high:.2f}]" if s.low is not None else ""
        return f"{_f(s.value)}{band} (n={s.n})"
    return f"| {name} | {cell(p.before)} | {cell(p.after)} |"


def _markdown(r: EditResults) -> str:
    m = r.metrics
    lines = [f"# edit ({r.method}) on {r.model}", "", f"Layers {r.layers} ({r.layer_source}). Edited model: "
             f"`{r.edited_model}`. Covariance: {r.covariance}.", "", "| metric | before | after |", "|---|---|---|",
             *[_row(k, getattr(m, k)) for k in Metrics.model_fields], "",
             "Efficacy/generalisation: share of prompts with p(new) > p(true); specificity: neighbours whose own "
             "answer still beats the new target; unrelated: top-1 unchanged; fluency: ROME's n-gram entropy; "
             "consistency: TF-IDF cosine to text about the new target. Bands: 95% (Wilson / Student t).", "",
             "| fact | new | p(new) before -> after | p(true) before -> after |", "|---|---|---|---|"]
    lines += [f"| {f.id} | {f.target_new} | {f.p_new_before:.3f} -> {f.p_new_after:.3f} | "
              f"{f.p_true_before:.3f} -> {f.p_true_after:.3f} |" for f in r.facts]
    if r.unknown:
        lines += ["", "Not edited (unknown to the model): " + ", ".join(r.unknown)]
    lines += ["", *[f"- {n}" for n in r.notes]]
    return "\n".join(lines) + "\n"
