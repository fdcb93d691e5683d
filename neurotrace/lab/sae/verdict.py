"""Is a fitted SAE usable? One verdict from dead features, explained variance and the spliced loss.

* ``unusable`` if more than ``MAX_DEAD_UNUSABLE`` of the features are dead, or explained variance is
  below ``MIN_EV_UNUSABLE``, or splicing the reconstruction in recovers less than
  ``MIN_SCORE_UNUSABLE`` of the zero-ablation loss gap (``ce_loss_score``);
* ``usable`` if at most ``MAX_DEAD_USABLE`` are dead, explained variance is at least
  ``MIN_EV_USABLE`` and ``ce_loss_score`` (when measured) at least ``MIN_SCORE_USABLE``;
* ``marginal`` in between.
"""

from typing import Any

MAX_DEAD_UNUSABLE, MAX_DEAD_USABLE = 0.5, 0.1
MIN_EV_UNUSABLE, MIN_EV_USABLE = 0.5, 0.8
MIN_SCORE_UNUSABLE, MIN_SCORE_USABLE = 0.5, 0.8

RULES = (f"usable: dead <= {MAX_DEAD_USABLE:.0%}, explained variance >= {MIN_EV_USABLE}, CE loss score >= "
         f"{MIN_SCORE_USABLE}; unusable: dead > {MAX_DEAD_UNUSABLE:.0%} or explained variance < {MIN_EV_UNUSABLE}"
         f" or CE loss score < {MIN_SCORE_UNUSABLE}; marginal otherwise")


def _below(metrics: dict[str, Any], max_dead: float, min_ev: float, min_score: float) -> list[str]:
    """The measures that miss one bar, in words."""
    dead, ev, score = metrics["dead_fraction"], metrics["explained_variance"], metrics.get("ce_loss_score")
    out = [f"{dead:.0%} dead"] if dead > max_dead else []
    if ev < min_ev:
        out.append(f"explained variance {ev:.2f}")
    if score is not None and score < min_score:
        out.append(f"CE loss score {score:.2f}")
    return out


def sae_verdict(metrics: dict[str, Any]) -> tuple[str, list[str]]:
    """('usable' | 'marginal' | 'unusable', the failing facts in words)."""
    bad = _below(metrics, MAX_DEAD_UNUSABLE, MIN_EV_UNUSABLE, MIN_SCORE_UNUSABLE)
    if bad:
        return "unusable", bad
    weak = _below(metrics, MAX_DEAD_USABLE, MIN_EV_USABLE, MIN_SCORE_USABLE)
    return ("marginal", weak) if weak else ("usable", [])
