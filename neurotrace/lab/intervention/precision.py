"""intervene in bfloat16: the prompts recomputed in float32, and whether a reading of the summary would change.

The reported quantity of a prompt is its target metric: the policies' signed change of the metric (log p of the
target, or the target-foil logit difference) at their first active step, with p(target) and the logit
difference of the baseline and intervened runs, and the generated tokens of both. The readings of the summary
are: the verdict, the direction and size word of the mean effect, how many prompts' top-1 next token and
generated text changed, and the top ranked SAE feature.

Prompts recomputed in float32 with the float32 model, every step of them (baseline, intervened, the
teacher-forced steps, controls, feature ranking):

* the deciding prompt: the one with the largest |effect| (it weighs most in the mean the verdict reads), or,
  in a ranking-only pass, the one whose top feature's |effect| is largest;
* a seeded random sample of the others: :data:`RECHECK_FRACTION` of the prompts, at least :data:`RECHECK_MIN`.

Differences: the largest |float32 - bfloat16| of the effect, of p(target) and of the logit difference over the
rechecked prompts, and the prompts whose generated tokens differ. The readings are recomputed with the float32
prompts in place of the bfloat16 ones (the damage check runs in float32 either way), and each that changes is
named.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from neurotrace.lab.effects import Damage, direction_word, size_word
from neurotrace.lab.intervention.report import judgement, overall_features
from neurotrace.lab.intervention.schema import PromptReport
from neurotrace.lab.model.runtime.precision import Agreement, agreement, changed_readings, choose

__all__ = ["PromptsCheck", "compare", "deciding_prompt", "pick", "readings", "to_agreement"]

RECHECK_FRACTION, RECHECK_MIN = 0.1, 1


def pick(n: int, must: Sequence[int], seed: int) -> tuple[list[int], int]:
    """(prompts to recheck, the deciding one first; how many are deciding)."""
    peaks, rand = choose(n, must, max(RECHECK_MIN, math.ceil(RECHECK_FRACTION * n)), seed)
    return peaks + rand, len(peaks)


@dataclass
class PromptsCheck:
    picked: list[int]
    n_deciding: int
    n_prompts: int
    max_effect_diff: float = 0.0            # metric units (nats of log p, or logits)
    max_p_diff: float = 0.0                 # p(target), baseline and intervened
    max_logit_diff: float = 0.0             # logit(target) - logit(foil), baseline and intervened
    n_tokens_differ: int = 0                # rechecked prompts whose baseline or intervened tokens differ
    changed: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)     # per recomputed prompt, in the order recomputed
    diffs: list[float] = field(default_factory=list)    # its largest |difference| of the three quantities


def deciding_prompt(entries: Sequence[PromptReport]) -> list[int]:
    """The prompt with the largest |effect| (or top feature |effect| in a ranking-only pass); [] if none."""
    def weight(e: PromptReport) -> float:
        if e.controls is not None:
            return abs(e.controls.effect)
        return max((abs(f.effect) for f in e.top_features or []), default=-1.0)
    if not entries:
        return []
    best = max(range(len(entries)), key=lambda i: (weight(entries[i]), -i))
    return [best] if weight(entries[best]) >= 0 else []


def readings(entries: list[PromptReport], harm: Damage | None, generating: bool) -> dict[str, str]:
    j = judgement(entries, harm)
    out = {"verdict": str(j.verdict),
           "direction": direction_word(j.effect) if j.effect else "none",
           "effect size": size_word(j.fraction) if j.fraction is not None else "none",
           "top-1 changed": str(sum(e.baseline.top_token != e.intervened.top_token for e in entries))}
    if generating:
        out["text changed"] = str(sum(e.baseline.text != e.intervened.text for e in entries))
    features = overall_features(entries)
    if features:
        out["top feature"] = f"f{features[0].feature}"
    return out


def _gap(a: float | None, b: float | None) -> float:
    return 0.0 if a is None or b is None else abs(a - b)


def compare(entries: list[PromptReport], again: dict[int, PromptReport], harm: Damage | None, generating: bool,
            check: PromptsCheck) -> PromptsCheck:
    """Fill ``check`` from the float32 reports ``again`` (prompt index -> report) against ``entries``."""
    merged = list(entries)
    for i, f32 in again.items():
        b16 = entries[i]
        if b16.controls is not None and f32.controls is not None:
            check.max_effect_diff = max(check.max_effect_diff, abs(b16.controls.effect - f32.controls.effect))
        for x, y in ((b16.baseline, f32.baseline), (b16.intervened, f32.intervened)):
            check.max_p_diff = max(check.max_p_diff, _gap(x.p_target, y.p_target))
            check.max_logit_diff = max(check.max_logit_diff, _gap(x.logit_diff, y.logit_diff))
        check.n_tokens_differ += (b16.baseline.tokens != f32.baseline.tokens
                                  or b16.intervened.tokens != f32.intervened.tokens)
        merged[i] = f32
        check.labels.append(f"prompt {i}")
        pairs = ((b16.baseline, f32.baseline), (b16.intervened, f32.intervened))
        check.diffs.append(max(_gap(b16.controls.effect if b16.controls else None,
                                    f32.controls.effect if f32.controls else None),
                               *(_gap(x.p_target, y.p_target) for x, y in pairs),
                               *(_gap(x.logit_diff, y.logit_diff) for x, y in pairs)))
    check.changed = changed_readings(readings(entries, harm, generating), readings(merged, harm, generating))
    return check


RERUN = "intervene with the same request and precision='float32'"


def to_agreement(check: PromptsCheck, seed: int) -> Agreement:
    """The shared :class:`Agreement`: per recomputed prompt the largest |difference| of its effect, p(target)
    and logit difference; the summary splits them and counts the prompts whose tokens differ."""
    out = agreement("target metric", check.labels, check.n_deciding, seed, check.diffs, [0.0] * len(check.diffs),
                    check.changed, RERUN)
    out.summary = (f"{out.summary[:-1]} ({len(check.labels)} of {check.n_prompts} prompts recomputed; largest "
                   f"|difference| of the effect {check.max_effect_diff:.2g}, of p(target) {check.max_p_diff:.2g}, of "
                   f"the logit difference {check.max_logit_diff:.2g}; {check.n_tokens_differ} prompt(s) generate "
                   "other tokens).")
    return out
