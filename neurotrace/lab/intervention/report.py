"""The intervene run's outputs: report.json (:class:`InterveneReport`), a per-step CSV, a feature-effect figure,
the result."""

from typing import Any

import numpy as np

from neurotrace.lab.capture import GenerationPlan, overall_plan
from neurotrace.lab.effects import (
    DAMAGE_RULES,
    SIZE_RULES,
    Damage,
    describe,
    direction_word,
    fraction_of_logp,
    size_word,
)
from neurotrace.lab.intervention.controls import RANDOM, RULES, SHORT_RULES, Judgement, verdict
from neurotrace.lab.intervention.figures import REPORT_FILE, effects_figure, rank_metric
from neurotrace.lab.intervention.policies import features_everywhere
from neurotrace.lab.intervention.schema import (
    ControlFamily,
    FeatureEffect,
    InterveneReport,
    InterveneRequest,
    InterveneResult,
    PromptReport,
)
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.runtime.precision import Agreement
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.sae import Dictionary, density_words


def overall_features(entries: list[PromptReport], top: int = 20) -> list[FeatureEffect]:
    """Features sorted by |mean effect| over prompts, the number printed (a prompt where a feature was not
    ranked counts 0); effects in nats of log p(target)."""
    effects: dict[int, list[float]] = {}
    peak: dict[int, float] = {}
    density: dict[int, float | None] = {}
    for e in entries:
        for f in e.top_features or []:
            effects.setdefault(f.feature, []).append(f.effect)
            peak[f.feature] = max(peak.get(f.feature, 0.0), f.activation)
            density[f.feature] = f.density
    n = max(1, len(entries))
    ranked = sorted(effects, key=lambda f: (-abs(sum(effects[f]) / n), f))
    return [FeatureEffect(feature=f, effect=sum(effects[f]) / n, activation=peak[f], density=density[f])
            for f in ranked[:top]]


def metric_name(entries: list[PromptReport]) -> str:
    """What the verdict's effects are changes of: the target-foil logit difference where prompts have foils,
    else log p of the target (its sequence log-probability) or of the baseline's next token."""
    foils = {(e.target, e.foil) for e in entries if e.foil and e.target}
    if foils and len(foils) == 1 and all(e.foil for e in entries):
        ((t, f),) = foils
        return f"logit({t!r}) - logit({f!r})"
    if foils and all(e.foil for e in entries):
        return "logit(target) - logit(foil)"
    if foils:
        return "logit(target) - logit(foil) (log p(target) where a prompt has no foil)"
    return rank_metric(entries)


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


def judgement(entries: list[PromptReport], harm: Damage | None) -> Judgement:
    """The verdict over prompts from each prompt's effect and controls (see controls.verdict)."""
    ctrl = [e.controls for e in entries if e.controls is not None]
    fractions = [_fraction(e) for e in entries if e.controls is not None]
    names = list(dict.fromkeys(n for c in ctrl for n in c.families))
    families = {n: [c.families.get(n, []) for c in ctrl] for n in names}
    if ctrl and ctrl[0].controls:
        families[RANDOM] = [c.controls for c in ctrl]
    return verdict([c.effect for c in ctrl], fractions, families, destructive=bool(harm and harm.destructive))


def _fraction(e: PromptReport) -> float:
    c = e.controls
    if c is None:
        return 0.0
    if e.foil and e.target:
        return c.effect / max(abs(c.baseline), 0.1)
    return fraction_of_logp(c.effect, c.baseline)


def _verdict_text(j: Judgement, metric: str) -> str:
    if j.verdict is None or j.effect is None or j.fraction is None:
        return ""
    unit = "logits" if "logit(" in metric else "nats"
    scale = "the baseline difference" if unit == "logits" else ("p(target)" if j.effect < 0 else
                                                               "the headroom 1 - p(target)")
    if j.effect == 0:
        text = f". It leaves {metric} unchanged"
    else:
        text = (f". It {direction_word(j.effect)} {metric} by {abs(j.effect):.3f} {unit} on average "
                f"({abs(j.fraction):.0%} of {scale}: {size_word(j.fraction)})")
    if j.distributions:
        text += "; controls (signed change, mean over prompts): " + "; ".join(
            f"{name} mean {m:+.3f}, range {lo:+.3f}..{hi:+.3f} (n={n})"
            for name, (m, lo, hi, n) in j.distributions.items())
    return (text + f". Verdict: {j.verdict}" + (f" against {j.family}" if j.family else "") + f" (rules: {SHORT_RULES})")


def dense_edited(request: InterveneRequest, sae: Dictionary | None) -> list[int]:
    """The edited SAE features that are dense by the dictionary's own density."""
    if sae is None or sae.density is None:
        return []
    edited = sorted({f for p in request.policies for f in getattr(p, "features", None) or []})
    dense = sae.density.dense()
    return [f for f in edited if 0 <= f < len(dense) and dense[f]]


def _dense_text(request: InterveneRequest, sae: Dictionary | None, j: Judgement) -> str:
    """What the ranking's candidates were, and a warning when the edit hits dense features."""
    if sae is None:
        return ""
    text = ""
    if request.rank_features:
        text = ("; ranked among all features active on each prompt (include_dense)" if request.include_dense else
                f"; ranked among non-dense features (density from {sae.density.source})" if sae.density is not None
                else "; feature density unknown for this dictionary, so dense features were not left out of the "
                "ranking")
    dense = dense_edited(request, sae)
    if dense:
        text += (f". The edit includes dense features ({density_words(sae.density, dense)}): they fire on a large "
                 "share of all tokens (position, the mean direction), so removing them moves the model on any text")
        if j.verdict == "destructive":
            text += "; the destructive verdict may come from them, not from a mechanism of this task"
    return text


def _summary(request: InterveneRequest, entries: list[PromptReport], features: list[FeatureEffect],
             sae_caution: str | None, j: Judgement, harm: Damage | None, sae: Dictionary | None = None) -> tuple:
    deltas = [e.intervened.p_target - e.baseline.p_target for e in entries
              if e.baseline.p_target is not None and e.intervened.p_target is not None]
    mean_delta = float(np.mean(deltas)) if deltas and request.policies else None
    changed = sum(e.baseline.text != e.intervened.text for e in entries) if request.max_new_tokens else 0
    top1 = sum(e.baseline.top_token != e.intervened.top_token for e in entries)
    metric = metric_name(entries)
    if not request.policies:
        text = f"Ranking-only pass (no policies) over {len(entries)} prompt(s)"
    else:
        gen = (f"generated text changed on {changed} of {len(entries)}" if request.max_new_tokens else
               "no text generated (max_new_tokens=0)")
        text = (f"{_describe(list(request.policies))} to {len(entries)} prompt(s): top-1 next token changed on "
                f"{top1} of {len(entries)}; {gen}")
        if mean_delta is not None:
            text += f"; mean p(target) change {mean_delta:+.4f}"
        text += _verdict_text(j, metric)
        if harm is not None:
            text += f". Edit on neutral text: {describe(harm)}"
    plan = _plan(entries)
    if plan.path == "recompute":
        text += f"; every forward recomputed the whole sequence ({plan.reason})"
    if features:
        text += (f"; top SAE feature when ablated alone: f{features[0].feature} ({features[0].effect:+.4f} nats "
                 f"of {rank_metric(entries)}, mean over prompts)")
    text += _dense_text(request, sae, j)
    if features_everywhere(list(request.policies)):
        text += ("; feature edits at every position leave out position 0, special tokens and attention-sink rows "
                 "(the dictionary was not trained on them)")
    if sae_caution:
        text += f". Caution: {sae_caution}"
    return mean_delta, changed, top1, text + "."


def _plan(entries: list[PromptReport]) -> GenerationPlan:
    return GenerationPlan.model_validate(overall_plan([e.generation.model_dump() for e in entries], "prompt"))


def _families(j: Judgement) -> list[ControlFamily]:
    return [ControlFamily(family=name, mean=m, min=lo, max=hi, n=n) for name, (m, lo, hi, n) in j.distributions.items()]


def write_report(run: Any, request: InterveneRequest, lm: LoadedModel, sae: Dictionary | None,
                 entries: list[PromptReport], lab: Lab, sae_caution: str | None = None,
                 harm: Damage | None = None, names: str | None = None,
                 precision: tuple[str, str | None, Agreement | None] = ("float32", None, None)) -> InterveneResult:
    """Every artifact and the result; ``precision`` = (the precision run, resolve's note, the bfloat16 run's
    agreement with its float32 recheck)."""
    ran, note, agreed = precision
    features = overall_features(entries)
    inputs = []
    if sae is not None and sae.cfg.kind == "run":
        run.add_input(sae.cfg.source)
        inputs = [sae.cfg.source] + ([sae.cfg.capture_run_id] if sae.cfg.capture_run_id else [])
    j = judgement(entries, harm)
    mean_delta, changed, top1, summary = _summary(request, entries, features, sae_caution, j, harm, sae)
    if names:   # a verdict on a feature says whether the feature is named and how well the name predicts
        summary = f"{summary[:-1]}. {names}."
    summary = " ".join(t for t in (summary, note, agreed.summary if agreed else None) if t)
    words = {"verdict": j.verdict, "metric": metric_name(entries), "effect": j.effect, "effect_fraction": j.fraction,
             "effect_size": size_word(j.fraction) if j.fraction is not None else None,
             "direction": direction_word(j.effect) if j.effect is not None else None, "control_family": j.family,
             "control_effect": j.control_mean, "control_effect_max": j.control_max, "controls": _families(j),
             "damage": harm, "n_top1_changed": top1, "verdict_rules": f"{RULES}; {DAMAGE_RULES}",
             "density_source": sae.density.source if sae is not None and sae.density is not None else None,
             "dense_edited": dense_edited(request, sae)}
    report = InterveneReport(seed=request.seed, model=lm.ref.model, model_fingerprint=lm.fingerprint,
                             fit_sae_run_id=request.fit_sae_run_id,
                             dictionary=request.dictionary, sae_site=sae.cfg.site if sae is not None else None,
                             inputs=inputs, policies=list(request.policies), max_new_tokens=request.max_new_tokens,
                             sampling=request.sampling,
                             size_rules=SIZE_RULES, sae_caution=sae_caution, prompts=entries, top_features=features,
                             mean_p_target_change=mean_delta, n_text_changed=changed, generation=_plan(entries),
                             precision=ran, precision_agreement=agreed, **words)
    uri = run.write_json(REPORT_FILE, report.model_dump(mode="json"))
    run.write_csv("tables/per_step.csv", [{"prompt": i, **row.model_dump(exclude={"policies_active"})}
                                          for i, e in enumerate(entries) for row in e.per_step])
    figures = ([run.write_figure("figures/feature_effects.png", effects_figure(features, len(entries),
                                                                                rank_metric(entries)))]
               if features else [])
    run.set_summary(summary)
    return InterveneResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures,
                           n_prompts=len(entries), mean_p_target_change=mean_delta, n_text_changed=changed,
                           top_features=features, report=uri, next=_next(j), sae_caution=sae_caution,
                           precision=ran, precision_agreement=agreed, **words)


def _next(j: Judgement) -> str:
    if j.verdict == "destructive":
        return ("The edit breaks the model on neutral text (report.json's damage): its effect on the target says "
                "nothing about a mechanism. Edit fewer units, use a smaller value, or restrict positions/steps.")
    return ("Read report.json for per-prompt texts, per-step KL and every control family; clamp or ablate the top "
            "features to test them (intervene with clamp_features), or fit another SAE on a different site.")
