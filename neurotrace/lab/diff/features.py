"""Dictionary features whose activations changed between the two sides.

A dictionary (an SAE or transcoder, typically fitted on the base: a ``fit_sae`` run id, or a SAELens /
Gemma Scope folder through :func:`neurotrace.lab.sae.load_dictionary`) encodes each side's states at its
site, every token of every input (BOS left out, as in the residual measures). Per feature: the mean
activation over those tokens on the base, the tuned side and the noise-floor side; ``change`` = tuned -
base, ``floor_change`` = floor - base. A feature "changed" only when ``|change|`` exceeds its own
``|floor_change|`` (the same control every other measure of diff is read against). ``top_input`` is the
input whose own mean changed most for the feature (on what input it moved).
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor

from neurotrace.lab.diff.measures import SideStates
from neurotrace.lab.diff.schema import FeatureDiff
from neurotrace.lab.sae import Dictionary

SIDES = ("base", "tuned", "floor")


@dataclass
class FeatureTally:
    """Running sums of every feature's activation per side, and each input's mean change."""

    d: Dictionary
    sums: dict[str, Tensor] = field(default_factory=dict)
    per_input: list[Tensor] = field(default_factory=list)       # (d_sae,) tuned - base mean of one input
    tokens: int = 0

    @torch.no_grad()
    def add(self, a: SideStates, b: SideStates, f: SideStates, start: int) -> None:
        means = {}
        for side, states in zip(SIDES, (a, b, f), strict=True):
            assert states.site is not None
            acts = self.d.encode(states.site[start:].to(self.d.W_enc.device)).float().cpu()   # (pos, d_sae)
            self.sums[side] = self.sums.get(side, 0) + acts.sum(0)
            means[side] = acts.mean(0)
        self.per_input.append(means["tuned"] - means["base"])
        self.tokens += int(a.site.shape[0] - start)

    def table(self) -> list[FeatureDiff]:
        """Every feature active on some side, the largest |change| first."""
        n = max(1, self.tokens)
        base, tuned, floor = (self.sums[s] / n for s in SIDES)
        change, floor_change = tuned - base, floor - base
        per_input = torch.stack(self.per_input)                          # (inputs, d_sae)
        top_input = per_input.abs().argmax(0)
        active = ((base > 0) | (tuned > 0) | (floor > 0)).nonzero().flatten()
        order = active[change[active].abs().argsort(descending=True, stable=True)]
        return [FeatureDiff(feature=int(i), base_mean=round(float(base[i]), 6), tuned_mean=round(float(tuned[i]), 6),
                            change=round(float(change[i]), 6), floor_change=round(float(floor_change[i]), 6),
                            above_floor=bool(change[i].abs() > floor_change[i].abs()), top_input=int(top_input[i]))
                for i in order.tolist()]
