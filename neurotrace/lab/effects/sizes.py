"""Effect sizes an agent can act on: a change scaled to the task, its direction, and a word for its size.

A change in nats means little on its own: 0.066 nats is 7% of p(target), and a 2-logit cut of a 2.5-logit
target-foil difference is most of the behaviour. Every edit verdict therefore scales its change:

* **With a foil** (the IOI convention), the metric is ``logit(target) - logit(foil)`` and the scale is the
  baseline's |difference|: ``fraction = change / |baseline difference|`` (a cut of the whole difference
  is -1.0).
* **Otherwise** the metric is ``log p(target)`` (the sequence log-probability for a target of several
  tokens) and the scale is the probability it can move: when it lowers, the fraction of the baseline
  probability removed, ``exp(change) - 1`` (-1.0 = all of it); when it raises, the fraction of the headroom
  gained, ``(p' - p) / (1 - p)``.

The size word reads ``|fraction|`` against :data:`SIZE_BARS`; the direction word is the sign of the
change ("raises" / "lowers"). Both are stated in every result that uses them (:data:`SIZE_RULES`).
"""

import math
from typing import Literal

SizeWord = Literal["negligible", "measurable but small", "moderate", "large"]
#: (upper bound of |fraction|, word), first that fits
SIZE_BARS: tuple[tuple[float, SizeWord], ...] = ((0.05, "negligible"), (0.2, "measurable but small"),
                                                 (0.5, "moderate"), (math.inf, "large"))
SIZE_RULES = ("effect size = the change as a fraction of the task's scale (with a foil: of the baseline's "
              "|logit(target) - logit(foil)|; otherwise of p(target) removed when it lowers, of the headroom "
              "1 - p(target) gained when it raises): negligible < 5%, measurable but small < 20%, moderate "
              "< 50%, large >= 50%")


def size_word(fraction: float) -> SizeWord:
    """The word for ``|fraction|`` by :data:`SIZE_BARS`."""
    a = abs(fraction)
    return next(word for bar, word in SIZE_BARS if a < bar)


def direction_word(change: float) -> str:
    """'raises' or 'lowers' (or 'leaves' for exactly no change)."""
    return "raises" if change > 0 else "lowers" if change < 0 else "leaves"


def fraction_of_logit_diff(change: float, baseline: float) -> float:
    """``change`` as a signed fraction of the baseline's |logit difference| (floored at 0.1 logits)."""
    return change / max(abs(baseline), 0.1)


def fraction_of_logp(change: float, baseline_logp: float) -> float:
    """A change of log p as a signed fraction: of p removed (lowers) or of the headroom gained (raises)."""
    if change <= 0:
        return math.expm1(change)
    p = math.exp(min(baseline_logp, 0.0))
    if p >= 1.0 - 1e-12:
        return 0.0
    return min(1.0, (math.exp(min(baseline_logp + change, 0.0)) - p) / (1.0 - p))
