"""Turn a steering sweep into its verdict, artifacts and result.

Written files:

* ``tables/effects.csv``: per condition (direction, random_k, shuffled, control_prompts) and alpha: the
  mean p(targets) and its mean change from alpha 0.
* ``tables/generations.csv``: the greedy steered text of the first prompts at every alpha.
* ``arrays/directions.safetensors``: the unit direction, the shuffled control (same scale factor) and the
  random directions, as added at alpha 1 (``alpha * ref_norm`` long for the direction).
* ``steer_results.json`` (input of :mod:`neurotrace.lab.steering.figures`), ``report.md`` (the rules of
  :mod:`neurotrace.lab.steering.verdict`), ``figures/effect_vs_alpha.png``.
"""

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from neurotrace.lab.effects import Damage
from neurotrace.lab.runs import Run
from neurotrace.lab.steering.directions import Direction
from neurotrace.lab.steering.figures import FIGURES, RESULTS_FILE
from neurotrace.lab.steering.schema import Effect, SteerRequest, SteerResult, SteerResults
from neurotrace.lab.steering.verdict import concept_verdict, describe, stronger, verdict


@dataclass
class Measured:
    ref_norm: float
    probs: Tensor                   # (condition, alpha, prompt): direction, randoms..., [shuffled]
    ctrl_probs: Tensor | None       # (alpha, control prompt) for the direction
    n_random: int
    has_shuffled: bool
    texts: list[dict[str, Any]] = field(default_factory=list)
    target_ids: list[int] = field(default_factory=list)
    concept: Tensor | None = None   # (direction + randoms, alpha): generations' concept score, mean over prompts
    damage: list[Damage] = field(default_factory=list)    # per alpha, the direction


def _curves(m: Measured, j0: int) -> dict[str, list[float]]:
    """Signed mean change of p(targets) per alpha for every condition."""
    delta = (m.probs - m.probs[:, j0:j0 + 1]).mean(2)                              # (condition, alpha)
    out = {"direction": delta[0].tolist()}
    out |= {f"random_{k}": delta[1 + k].tolist() for k in range(m.n_random)}
    if m.has_shuffled:
        out["shuffled"] = delta[-1].tolist()
    if m.ctrl_probs is not None:
        out["control_prompts"] = (m.ctrl_probs.mean(1) - m.ctrl_probs[j0].mean()).tolist()
    return out


def _concept(m: Measured, j0: int) -> dict[str, list[float]]:
    """Change of the generations' concept score from alpha 0, per condition and alpha."""
    if m.concept is None:
        return {}
    delta = m.concept - m.concept[:, j0:j0 + 1]                                    # (condition, alpha)
    return {"direction": delta[0].tolist()} | {f"random_{k}": delta[1 + k].tolist() for k in range(m.n_random)}


def _effects(curves: dict[str, list[float]], concept: dict[str, list[float]], damage: list[Damage],
             alphas: list[float], n_random: int) -> list[Effect]:
    out = []
    for j, alpha in enumerate(alphas):
        rand = [concept[f"random_{k}"][j] for k in range(n_random)] if concept else []
        out.append(Effect(alpha=alpha, direction=curves["direction"][j],
                          random=sum(abs(curves[f"random_{k}"][j]) for k in range(n_random)) / n_random,
                          shuffled=abs(curves["shuffled"][j]) if "shuffled" in curves else None,
                          control=abs(curves["control_prompts"][j]) if "control_prompts" in curves else None,
                          concept=concept["direction"][j] if concept else None,
                          concept_random=max((abs(r) for r in rand), default=None) if concept else None,
                          kl=damage[j].kl if damage else None, destructive=bool(damage and damage[j].destructive)))
    return out


def _judge(effects: list[Effect], concept: dict[str, list[float]], alphas: list[float], n_random: int,
           min_effect: float) -> tuple[str, int, str]:
    """(verdict, index of the alpha it is read at, the metric that decided) - see steering.verdict."""
    by_size = sorted(range(len(alphas)), key=lambda j: (abs(alphas[j]), alphas[j]), reverse=True)
    usable = [j for j in by_size if alphas[j] != 0.0 and not effects[j].destructive]
    if not usable:
        return "destructive", by_size[0], "damage"
    j = usable[0]
    e = effects[j]
    v = verdict(abs(e.direction), e.random, e.shuffled, e.control, min_effect)
    g = concept_verdict(concept["direction"][j], [concept[f"random_{k}"][j] for k in range(n_random)]) \
        if concept else None
    best, by_text = stronger(v, g)
    return best, j, "concept score" if by_text else "p(targets)"


def _monotonic(values: list[float]) -> bool:
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    return all(s >= -1e-9 for s in steps) or all(s <= 1e-9 for s in steps)


def write_outputs(run: Run, request: SteerRequest, d: Direction, sites: list[str], alphas: list[float],
                  m: Measured) -> SteerResult:
    j0 = alphas.index(0.0)
    curves = _curves(m, j0)
    concept = _concept(m, j0)
    effects = _effects(curves, concept, m.damage, alphas, m.n_random)
    v, jmax, decided = _judge(effects, concept, alphas, m.n_random, request.min_effect)
    top = effects[jmax]
    p_base = float(m.probs[0, j0].mean())
    results = SteerResults(model=request.model, source=d.source, sites=sites, positions=request.positions,
                           targets=request.targets, alphas=alphas, ref_norm=m.ref_norm, p_base=p_base,
                           p_direction=m.probs[0].mean(1).tolist(), curves=curves, verdict=v,
                           alpha_max=alphas[jmax], n_prompts=m.probs.shape[2], verdict_metric=decided,
                           concept=concept, damage=m.damage,
                           n_control=0 if m.ctrl_probs is None else m.ctrl_probs.shape[1])
    run.write_json(RESULTS_FILE, results.model_dump(mode="json"))
    run.write_csv("tables/effects.csv", _effect_rows(m, curves, alphas, j0))
    if m.texts:
        run.write_csv("tables/generations.csv", m.texts, ["alpha", "prompt", "text"])
    scale = m.ref_norm / float(d.vector.norm())
    arrays: dict[str, Tensor] = {"direction": d.vector * scale}
    if d.shuffled is not None:
        arrays["shuffled"] = d.shuffled * scale
    run.write_tensors("arrays/directions.safetensors", arrays, metadata={"site": d.site, "ref_norm": str(m.ref_norm)})
    report = run.write_text("report.md", _markdown(request, results, effects, m.texts))
    figures = [run.write_figure("figures/effect_vs_alpha.png", FIGURES["effect_vs_alpha"](results))]
    summary = _summary(request, results, top, effects)
    run.set_summary(summary)
    return SteerResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures,
                       next=_next(v, report, effects), verdict=v, site=sites[0], ref_norm=m.ref_norm, p_base=p_base,
                       alpha_verdict=None if v == "destructive" else top.alpha, verdict_metric=decided,
                       effects=effects, monotonic=_monotonic(curves["direction"]))


def _effect_rows(m: Measured, curves: dict[str, list[float]], alphas: list[float], j0: int) -> list[dict]:
    means = {"direction": m.probs[0].mean(1).tolist()}
    means |= {f"random_{k}": m.probs[1 + k].mean(1).tolist() for k in range(m.n_random)}
    if m.has_shuffled:
        means["shuffled"] = m.probs[-1].mean(1).tolist()
    if m.ctrl_probs is not None:
        means["control_prompts"] = m.ctrl_probs.mean(1).tolist()
    return [{"condition": name, "alpha": alpha, "mean_p_targets": means[name][j], "change": curves[name][j]}
            for name in curves for j, alpha in enumerate(alphas)]


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _summary(request: SteerRequest, results: SteerResults, top: Effect, effects: list[Effect]) -> str:
    p_max = results.p_direction[results.alphas.index(top.alpha)]
    broken = [e.alpha for e in effects if e.destructive]
    if results.verdict == "destructive":
        why = "; ".join(results.damage[results.alphas.index(top.alpha)].reasons)
        return (f"Steered {request.model} along the {results.source} at {', '.join(results.sites)}: every alpha "
                f"breaks the model (at alpha {top.alpha:g} x {results.ref_norm:.3g}, the mean residual norm: {why}). "
                f"Verdict: destructive; the effects on p(targets) and text say nothing about the concept. Try "
                f"smaller alphas (e.g. {min(abs(a) for a in results.alphas if a) / 4:.3g}).")
    text = (f"Steered {request.model} along the {results.source} at {', '.join(results.sites)} "
            f"({request.positions} positions): p({'+'.join(request.targets)}) moves from {results.p_base:.3f} "
            f"to {p_max:.3f} at alpha {top.alpha:g} (x {results.ref_norm:.3g}, the mean residual norm), change "
            f"{top.direction:+.3f}; random same-norm directions {top.random:.3f}, shuffled {_fmt(top.shuffled)}, "
            f"control prompts {_fmt(top.control)}")
    if top.concept is not None:
        text += (f"; the generations' concept score changes {top.concept:+.3f} per word (random directions' largest "
                 f"{_fmt(top.concept_random)})")
    if broken:
        text += (f". Alphas {', '.join(f'{a:g}' for a in broken)} are destructive (neutral text or generations "
                 f"break), so the verdict is read at alpha {top.alpha:g}")
    return (text + f". Verdict: {results.verdict} (by {results.verdict_metric}; rules in report.md); "
            f"{results.n_prompts} prompts.")


def _next(v: str, report: str, effects: list[Effect] | None = None) -> str:
    if v == "destructive":
        return ("Every alpha broke the model on neutral text or in its generations: re-run with smaller alphas "
                "(alphas are multiples of the mean residual norm ref_norm; try 0.01-0.1).")
    if v == "causal":
        return (f"Read the steered texts and the rules in {report}; check that it holds on new prompts and at "
                "neighbouring layers (layers=[...]) before claiming the direction is the mechanism.")
    if v == "confounded":
        return (f"Read {report}: the controls moved too. Use pairs that differ only in the concept, and control "
                "prompts where the targets are implausible.")
    if effects and any(e.destructive for e in effects):
        return ("No alpha short of the destructive ones moved the model: try other layers, or check with probe "
                "whether the concept is readable at this layer at all.")
    return ("Try other layers or larger alphas, or check with probe whether the concept is readable at this "
            "layer at all.")


def _markdown(request: SteerRequest, results: SteerResults, effects: list[Effect], texts: list[dict]) -> str:
    lines = [f"# steer on {request.model}", "", f"Direction: {results.source}; added at "
             f"{', '.join(results.sites)}, {request.positions} positions; alpha in units of the mean residual "
             f"norm {results.ref_norm:.4g}. Targets: {request.targets}.", "",
             f"## Verdict: {results.verdict}", "", "Rules (at the largest |alpha|):", "",
             *[f"- {rule}" for rule in describe(request.min_effect)], "",
             "| alpha | direction | random (mean abs) | shuffled | control prompts | concept score (text) | "
             "random concept (max abs) | neutral KL | destructive |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {e.alpha:g} | {e.direction:+.4f} | {e.random:.4f} | {_fmt(e.shuffled)} | {_fmt(e.control)} | "
              f"{_fmt(e.concept)} | {_fmt(e.concept_random)} | {_fmt(e.kl)} | {'yes' if e.destructive else 'no'} |"
              for e in effects]
    if texts:
        lines += ["", "## Steered text", ""]
        lines += [f"- alpha {t['alpha']:g}: `{t['prompt']}` -> `{t['text']}`" for t in texts]
    return "\n".join(lines) + "\n"


