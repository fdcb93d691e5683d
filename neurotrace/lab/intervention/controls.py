"""Is an intervention's effect more than a control's? The metric, its controls, and the verdict.

**Metric** (:class:`Metric`), read at the prediction position of the policies' first active step:

* with a ``foil``: ``logit(target) - logit(foil)`` (the IOI convention; first tokens of each);
* with a target: ``log p(target)``, the sequence log-probability when the target has several tokens (the
  target's tokens are fed after the prompt, teacher-forced; at step 0 of a causal LM only);
* without one: ``log p`` of the baseline's next token.

The **effect** is the signed change of the metric under the policies. Its **controls**:

* the structure-matched families of :mod:`neurotrace.lab.intervention.structural` (other heads of the same layer,
  other neurons of the same layer, features of matched activation mass, other positions);
* ``random directions``: at every site and position the policies change, a seeded random vector with the norm
  of the policies' change ``h' - h`` (zero where they changed nothing).

**Verdict** (:func:`verdict`), over prompts, with ``E`` = |mean signed effect|, ``F`` = |mean effect as a
fraction of the task's scale| (:mod:`neurotrace.lab.effects.sizes`) and, for the first family present in
``FAMILY_ORDER``, ``C_k`` = control k's mean change *in the edit's direction* (a control that moves the metric
the other way counts 0: zeroing other heads that *raise* the logit difference says nothing about whether these
heads lower it), ``C`` their mean and ``M`` their largest:

* ``destructive`` if the edit breaks neutral text or generations (:mod:`neurotrace.lab.effects.damage`);
* ``no measurable effect`` if ``F < MIN_FRACTION``;
* ``not above control`` if ``E <= M`` (some control moved the metric as much);
* ``causal`` if ``E >= MIN_RATIO * C`` and ``F >= MIN_CAUSAL_FRACTION``;
* ``weak`` otherwise (above every control, but small for the task or under ``MIN_RATIO`` times their mean).
"""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from neurotrace.lab.effects import fraction_of_logit_diff, fraction_of_logp
from neurotrace.lab.intervention.structural import FAMILY_ORDER, RANDOM
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.runtime.stepwise import prediction_position
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.seeding import make_generator

MIN_FRACTION = 0.05        # of the task's scale: below it, no measurable effect
MIN_CAUSAL_FRACTION = 0.2  # of the task's scale: causal needs at least a moderate effect
MIN_RATIO = 2.0            # the effect over the controls' mean
RULES = (f"destructive: breaks neutral text or generations (see damage); no measurable effect: |effect| < "
         f"{MIN_FRACTION:.0%} of the task's scale; not above control: |mean effect| no larger than the largest "
         "change in the same direction by a control of the first structure-matched family (same-layer heads, same-layer neurons, matched-mass "
         f"features, other positions; else random same-norm directions); causal: above every such control, >= "
         f"{MIN_RATIO:g}x their mean and >= {MIN_CAUSAL_FRACTION:.0%} of the task's scale; weak: otherwise")

SHORT_RULES = (f"causal = above every control of the family, >= {MIN_RATIO:g}x their mean and >= "
               f"{MIN_CAUSAL_FRACTION:.0%} of the task's scale; no measurable effect < {MIN_FRACTION:.0%}; "
               "verdict_rules has all")


@dataclass(frozen=True)
class Metric:
    """What the effect is a change of (see the module docstring)."""

    tokens: tuple[int, ...]          # the target's tokens (or the baseline's next token)
    foil: int | None = None
    label: str = "log p(target)"

    @property
    def is_logit_diff(self) -> bool:
        return self.foil is not None

    def fraction(self, change: float, baseline: float) -> float:
        return fraction_of_logit_diff(change, baseline) if self.is_logit_diff else fraction_of_logp(change, baseline)


def _first_step(policies: list[Any], n_steps: int) -> int:
    return next((s for s in range(n_steps + 1) if any(p.active(s) for p in policies)), 0)


@torch.no_grad()
def control_effects(lm: LoadedModel, ids: list[int], generated: list[int], policies: list[Any],
                    context_for: Callable[[int], AbstractContextManager], sites_at: Callable[[int], list[str]],
                    metric: Metric, n_controls: int, seed: int,
                    families: dict[str, list[Callable[[int], AbstractContextManager]]] | None = None
                    ) -> dict[str, Any]:
    """{'step', 'baseline', 'effect', 'controls': [...], 'families': {name: [...]}} in the metric's units."""
    step = _first_step(policies, len(generated))
    seq = list(ids) + list(generated[:step])
    pos = prediction_position(lm, ids) if step == 0 else len(seq) - 1
    multi = step == 0 and lm.lm_kind == "causal" and metric.foil is None and len(metric.tokens) > 1
    tokens = list(metric.tokens) if multi else list(metric.tokens[:1])
    x = torch.tensor([seq + tokens[:-1]], device=lm.device)
    sites = sites_at(step)

    def run(hooks: dict, outer: AbstractContextManager | None = None) -> tuple[float, dict[str, torch.Tensor]]:
        seen: dict[str, torch.Tensor] = {}

        def rec(act: torch.Tensor, site: str) -> None:
            seen[site] = act.detach().float().clone()
        with outer if outer is not None else nullcontext(), hooked(lm.model, lm.adapter, hooks or {s: rec for s in sites}):
            logits = lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float()
        if metric.foil is not None:
            return float(logits[pos, tokens[0]] - logits[pos, metric.foil]), seen
        logp = torch.log_softmax(logits[pos:pos + len(tokens)], -1)                  # (n_tokens, vocab)
        return float(logp[torch.arange(len(tokens)), torch.tensor(tokens, device=logp.device)].sum()), seen

    clean, clean_acts = run({})
    edited, edited_acts = run({}, context_for(step))
    g = make_generator(seed, lm.device)
    controls = []
    for _ in range(n_controls):
        hooks = {}
        for site in sites:
            d = edited_acts[site] - clean_acts[site]                                   # (1, pos, width)
            r = torch.randn(d.shape, generator=g, device=d.device)
            r = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12) * d.norm(dim=-1, keepdim=True)
            hooks[site] = lambda act, site, r=r: act + r.to(act.dtype)
        controls.append(run(hooks)[0] - clean if hooks else 0.0)
    fams = {name: [run({}, ctx(step))[0] - clean for ctx in ctxs] for name, ctxs in (families or {}).items()}
    return {"step": step, "baseline": clean, "effect": edited - clean, "controls": controls, "families": fams}


@dataclass
class Judgement:
    verdict: str | None
    effect: float | None            # mean signed effect over prompts
    fraction: float | None          # mean signed fraction of the task's scale
    family: str | None              # the control family the verdict used
    control_mean: float | None      # its mean change in the edit's direction (opposite moves count 0)
    control_max: float | None       # its largest change in the edit's direction (0 if none moves that way)
    distributions: dict[str, tuple[float, float, float, int]]   # family -> (mean, min, max, n), signed


def _per_control(rows: list[list[float]]) -> list[float]:
    """The signed mean over prompts of control k, for k present on every prompt."""
    n = min((len(r) for r in rows), default=0)
    return [sum(r[k] for r in rows) / len(rows) for k in range(n)]


def verdict(effects: list[float], fractions: list[float], families: dict[str, list[list[float]]],
            destructive: bool = False) -> Judgement:
    """The verdict over prompts (see the module docstring); ``families[name]`` holds per prompt the signed effects
    of that family's controls. Like is compared with like: a control counts by how far it moves the metric in the
    edit's direction (a control that moves it the other way shows nothing about the edited units)."""
    per = {}
    for name in sorted(families, key=lambda f: FAMILY_ORDER.index(f) if f in FAMILY_ORDER else 99):
        cs = _per_control(families[name])
        if cs:
            per[name] = cs
    dist = {name: (sum(cs) / len(cs), min(cs), max(cs), len(cs)) for name, cs in per.items()}
    if not effects:
        return Judgement(None, None, None, None, None, None, dist)
    e = sum(effects) / len(effects)
    f = sum(fractions) / len(fractions)
    family = next(iter(per), None)
    sign = 1.0 if e >= 0 else -1.0
    toward = [max(0.0, sign * c) for c in per[family]] if family else []
    c, m = (sum(toward) / len(toward), max(toward)) if toward else (None, None)
    if destructive:
        v: str | None = "destructive"
    elif abs(f) < MIN_FRACTION:
        v = "no measurable effect"
    elif c is None or m is None:
        v = None
    elif abs(e) <= m:
        v = "not above control"
    else:
        v = "causal" if abs(e) >= MIN_RATIO * c and abs(f) >= MIN_CAUSAL_FRACTION else "weak"
    return Judgement(v, e, f, family, c, m, dist)


__all__ = ["RANDOM", "RULES", "SHORT_RULES", "Judgement", "Metric", "control_effects", "verdict"]
