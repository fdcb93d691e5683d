"""Is an intervention's effect more than any push of the same size? Random-direction controls.

At the policies' first active step, the edited forward records each site's change ``delta = h' - h``
(per position). Each control replaces the policies by a random direction with the same norm as
``delta`` at every site and position (zero where the policies changed nothing), drawn from a seeded
generator. The effect of the policies and of each control is the change in log p of the metric token
(the target, or the baseline's token) at the prediction position of that step, in nats.

Verdict over the prompts (:func:`verdict`), with ``E`` the mean |effect|, ``C`` the mean |effect| of the
controls and ``M`` the largest |effect| of any control:

* ``no measurable effect`` if ``E < MIN_EFFECT``;
* ``not above control`` if ``E <= M`` (a random direction of the same norm moved log p at least as much;
  this includes ``E <= C``);
* ``causal`` if ``E >= MIN_RATIO * C``;
* ``weak`` otherwise (above every control, but less than ``MIN_RATIO`` times their mean).

``M`` is over every control of every prompt, so it is the stricter bar, and more so with more ``controls``.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.runtime.stepwise import prediction_position
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.seeding import make_generator

MIN_EFFECT = 0.05     # nats of log p(target)
MIN_RATIO = 2.0       # the policies' |effect| over the controls' mean |effect|
RULES = (f"causal: mean |effect| >= {MIN_EFFECT} nats, above the largest same-norm random direction's and >= "
         f"{MIN_RATIO:g}x their mean; weak: above the largest control but < {MIN_RATIO:g}x their mean; "
         f"not above control: >= {MIN_EFFECT} nats but no larger than the largest control; "
         f"no measurable effect: < {MIN_EFFECT} nats")


def _first_step(policies: list[Any], n_steps: int) -> int:
    return next((s for s in range(n_steps + 1) if any(p.active(s) for p in policies)), 0)


@torch.no_grad()
def control_effects(lm: LoadedModel, ids: list[int], generated: list[int], policies: list[Any],
                    context_for: Callable[[int], AbstractContextManager], sites_at: Callable[[int], list[str]],
                    metric: int, n_controls: int, seed: int) -> dict[str, Any]:
    """{'step', 'effect', 'controls': [...]} in nats of log p(metric) at the first active step."""
    step = _first_step(policies, len(generated))
    seq = list(ids) + list(generated[:step])
    x = torch.tensor([seq], device=lm.device)
    pos = prediction_position(lm, ids) if step == 0 else len(seq) - 1
    sites = sites_at(step)

    def run(hooks: dict, outer: AbstractContextManager | None = None) -> tuple[float, dict[str, torch.Tensor]]:
        seen: dict[str, torch.Tensor] = {}

        def rec(act: torch.Tensor, site: str) -> None:
            seen[site] = act.detach().float().clone()
        with outer if outer is not None else nullcontext(), hooked(lm.model, lm.adapter, hooks or {s: rec for s in sites}):
            out = lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, pos].float()
        return float(torch.log_softmax(out, -1)[metric]), seen

    clean, clean_acts = run({})
    edited, edited_acts = run({}, context_for(step))
    g = make_generator(seed, lm.device)
    controls = []
    for _ in range(n_controls):
        hooks = {}
        for site in sites:
            d = edited_acts[site] - clean_acts[site]                       # (1, pos, width)
            r = torch.randn(d.shape, generator=g, device=d.device)
            r = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12) * d.norm(dim=-1, keepdim=True)
            hooks[site] = lambda act, site, r=r: act + r.to(act.dtype)
        controls.append(run(hooks)[0] - clean if hooks else 0.0)
    return {"step": step, "effect": edited - clean, "controls": controls}


def verdict(effects: list[float], controls: list[float]) -> tuple[str | None, float | None, float | None,
                                                                float | None]:
    """(verdict, mean |effect|, mean |control effect|, largest |control effect|) over prompts; verdict None
    without data."""
    if not effects:
        return None, None, None, None
    e = sum(abs(v) for v in effects) / len(effects)
    c = sum(abs(v) for v in controls) / len(controls) if controls else None
    m = max(abs(v) for v in controls) if controls else None
    if e < MIN_EFFECT:
        return "no measurable effect", e, c, m
    if c is None or m is None:
        return None, e, c, m
    if e <= m:
        return "not above control", e, c, m
    return ("causal" if e >= MIN_RATIO * c else "weak"), e, c, m
