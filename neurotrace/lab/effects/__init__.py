"""Shared judgement of edits: effect sizes with their direction, the destructive-edit check, collapse rules.

Every edit tool (intervene, steer, clamp_sweep, the SAE splice) reads its verdict words through this one
place, so "measurable but small", "destructive" and "collapsed" mean the same thing in every result.
"""

from neurotrace.lab.effects.collapse import CollapseThresholds, collapse_reasons, text_metrics
from neurotrace.lab.effects.damage import DAMAGE_RULES, Damage, NeutralSet, describe, judge, new_collapses
from neurotrace.lab.effects.sizes import (
    SIZE_RULES,
    SizeWord,
    direction_word,
    fraction_of_logit_diff,
    fraction_of_logp,
    size_word,
)

__all__ = ["DAMAGE_RULES", "SIZE_RULES", "CollapseThresholds", "Damage", "NeutralSet", "SizeWord", "collapse_reasons",
           "describe", "direction_word", "fraction_of_logit_diff", "fraction_of_logp", "judge", "new_collapses",
           "size_word", "text_metrics"]
