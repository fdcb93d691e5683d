"""The intervene run's outputs: report.json (:class:`InterveneReport`), a per-step CSV, a feature-effect figure,
the result."""

from typing import Any

import numpy as np

from neurotrace.lab.capture import GenerationPlan, overall_plan
from neurotrace.lab.intervention.controls import RULES, verdict
from neurotrace.lab.intervention.schema import (
    FeatureEffect,
    InterveneReport,
    InterveneRequest,
    InterveneResult,
    PromptReport,
)
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.sae import SAE

REPORT_FILE = "report.json"


def overall_features(entries: list[PromptReport], top: int = 20) -> list[FeatureEffect]:
    """Features sorted by |mean effect| over prompts, the number printed (a prompt where a feature was not
    ranked counts 0); effects in nats of log p(target)."""
    effects: dict[int, list[float]] = {}
    peak: dict[int, float] = {}
    for e in entries:
        for f in e.top_features or []:
            effects.setdefault(f.feature, []).append(f.effect)
            peak[f.feature] = max(peak.get(f.feature, 0.0), f.activation)
    n = max(1, len(entries))
    ranked = sorted(effects, key=lambda f: (-abs(sum(effects[f]) / n), f))
    return [FeatureEffect(feature=f, effect=sum(effects[f]) / n, activation=peak[f]) for f in ranked[:top]]


def metric_name(entries: list[PromptReport]) -> str:
    """What the effects are changes of: log p of the one target, of each prompt's target, or of the baseline's
    next token where a prompt has no target."""
    targets = {e.target for e in entries}
    if len(targets) == 1:
        (target,) = targets
        return f"log p({target!r})" if target else "log p(the baseline's next token)"
    return "log p(target)" if None not in targets else "log p(target, or the baseline's next token without one)"


def _figure(features: list[FeatureEffect], n_prompts: int, metric: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.3 * len(features) + 1.2))
    ax.barh([f"f{f.feature}" for f in features][::-1], [f.effect for f in features][::-1])
    ax.set(xlabel=f"mean change in {metric} when ablated alone (nats)",
           title=f"SAE features ranked by single-feature ablation (n={n_prompts} prompt{'s' * (n_prompts != 1)})")
    return fig


def _describe(policies: list[Any]) -> str:
    """'Applied 1 policy (zero)' or '2 policies applied jointly (set_neurons 1:3 set to 0, mean; ...)'."""
    parts = []
    for p in policies[:6]:
        if p.kind == "set_neurons":
            shown = ", ".join(p.neurons[:4]) + (", ..." if len(p.neurons) > 4 else "")
            parts.append(f"set_neurons {shown} set to {p.value:g}")
        else:
            parts.append(p.kind)
    kinds = ", ".join(parts) + (", ..." if len(policies) > 6 else "")
    if len(policies) == 1:
        return f"Applied 1 policy ({kinds})"
    return f"{len(policies)} policies applied jointly ({kinds}; every effect below is of all of them together)"


def _verdict_text(v: str, eff: float, ceff: float | None, cmax: float | None, metric: str) -> str:
    ctrl = (f" vs same-norm random directions' mean {ceff:.3f} and largest {cmax:.3f}"
            if ceff is not None and cmax is not None else "")
    return f". Verdict: {v} (mean |change in {metric}| {eff:.3f} nats{ctrl}; {RULES})"


def _summary(request: InterveneRequest, entries: list[PromptReport], features: list[FeatureEffect],
             sae_caution: str | None = None) -> tuple:
    deltas = [e.intervened.p_target - e.baseline.p_target for e in entries
              if e.baseline.p_target is not None and e.intervened.p_target is not None]
    mean_delta = float(np.mean(deltas)) if deltas and request.policies else None
    changed = sum(e.baseline.text != e.intervened.text for e in entries)
    ctrl = [e.controls for e in entries if e.controls is not None]
    v, eff, ceff, cmax = verdict([c.effect for c in ctrl], [x for c in ctrl for x in c.controls])
    metric = metric_name(entries)
    if not request.policies:
        text = f"Ranking-only pass (no policies) over {len(entries)} prompt(s)"
    else:
        text = (f"{_describe(list(request.policies))} to {len(entries)} prompt(s): {changed} generated "
                f"text(s) changed")
        if mean_delta is not None:
            text += f", mean p(target) change {mean_delta:+.4f}"
        if v is not None and eff is not None:
            text += _verdict_text(v, eff, ceff, cmax, metric)
    plan = _plan(entries)
    if plan.path == "recompute":
        text += f"; every forward recomputed the whole sequence ({plan.reason})"
    if features:
        text += (f"; top SAE feature when ablated alone: f{features[0].feature} ({features[0].effect:+.4f} nats "
                 f"of {metric}, mean over prompts)")
    if sae_caution:
        text += f". Caution: {sae_caution}"
    return mean_delta, changed, text + ".", (v, eff, ceff, cmax)


def _plan(entries: list[PromptReport]) -> GenerationPlan:
    return GenerationPlan.model_validate(overall_plan([e.generation.model_dump() for e in entries], "prompt"))


def write_report(run: Any, request: InterveneRequest, lm: LoadedModel, sae: SAE | None,
                 entries: list[PromptReport], lab: Lab, sae_caution: str | None = None) -> InterveneResult:
    features = overall_features(entries)
    inputs = []
    if request.fit_sae_run_id:
        run.add_input(request.fit_sae_run_id)
        inputs = [request.fit_sae_run_id] + ([sae.cfg.capture_run_id] if sae is not None and sae.cfg.capture_run_id
                                             else [])
    mean_delta, changed, summary, (v, eff, ceff, cmax) = _summary(request, entries, features, sae_caution)
    report = InterveneReport(seed=request.seed, model=lm.ref.model, model_fingerprint=lm.fingerprint,
                             fit_sae_run_id=request.fit_sae_run_id, sae_site=sae.cfg.site if sae is not None else None,
                             inputs=inputs, policies=list(request.policies), max_new_tokens=request.max_new_tokens,
                             sampling=request.sampling, verdict=v, effect=eff, control_effect=ceff,
                             control_effect_max=cmax, verdict_rules=RULES, sae_caution=sae_caution, prompts=entries, top_features=features,
                             mean_p_target_change=mean_delta, n_text_changed=changed, generation=_plan(entries))
    uri = run.write_json(REPORT_FILE, report.model_dump(mode="json"))
    run.write_csv("tables/per_step.csv", [{"prompt": i, **row.model_dump(exclude={"policies_active"})}
                                          for i, e in enumerate(entries) for row in e.per_step])
    figures = [run.write_figure("figures/feature_effects.png", _figure(features, len(entries), metric_name(entries)))] if features else []
    run.set_summary(summary)
    nxt = ("Read report.json for per-prompt texts and per-step KL; clamp or ablate the top features to test them "
           "(intervene with clamp_features), or fit another SAE on a different site.")
    return InterveneResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures,
                           n_prompts=len(entries), mean_p_target_change=mean_delta, n_text_changed=changed,
                           top_features=features, report=uri, next=nxt, verdict=v, effect=eff, control_effect=ceff,
                           control_effect_max=cmax, sae_caution=sae_caution)
