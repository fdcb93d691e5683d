"""Shared judgement of edits: effect sizes with their direction, the destructive-edit check, collapse rules.

Every edit tool (intervene, steer, clamp_sweep, the SAE splice) reads its verdict words through this one
place, so "measurable but small", "destructive" and "collapsed" mean the same thing in every result.
"""

from neurotrace.lab.effects.collapse import (
    COLLAPSE_TYPES,
    METRIC_NAMES,
    CollapseThresholds,
    CollapseType,
    collapse_reasons,
    collapse_type,
    describe_thresholds,
    text_metrics,
)
from neurotrace.lab.effects.damage import DAMAGE_RULES, Damage, NeutralSet, describe, judge, new_collapses
from neurotrace.lab.effects.sizes import (
    SIZE_RULES,
    SizeWord,
    direction_word,
    fraction_of_logit_diff,
    fraction_of_logp,
    size_word,
)

__all__ = ["COLLAPSE_TYPES", "DAMAGE_RULES", "METRIC_NAMES", "SIZE_RULES", "CollapseThresholds", "CollapseType", "Damage",
           "NeutralSet", "SizeWord", "collapse_reasons", "collapse_type", "describe", "describe_thresholds", "direction_word", "fraction_of_logit_diff", "fraction_of_logp", "judge", "new_collapses",
           "size_word", "text_metrics"]
