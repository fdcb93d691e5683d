"""The steering verdict: thresholds stated once, used by the run and printed in its report.

With ``E`` = |mean change of p(targets)| on the steered prompts at the largest |alpha|, ``R`` = the mean
|change| over the random same-norm directions, ``S`` = the |change| with the shuffled direction and
``C`` = the |change| on the control prompts (both at the same alpha):

* ``no effect``: ``E < min_effect`` or ``E <= R`` (no better than a random direction);
* ``causal``: ``E > 3 R`` and ``E > 2 S`` (if a shuffled control exists) and ``C < E / 2`` (if control
  prompts were given);
* ``confounded``: ``E > 3 R`` but the shuffled direction or the control prompts move nearly as much:
  the effect is not specific to the contrast or to the prompts;
* ``weak``: anything else (``R < E <= 3 R``).

The generations are judged too, by a **concept score**: ``(concept words - contrast words) / words`` of the
steered text (the targets and ``concept_words`` count for, ``contrast_words`` against; a word matches every word
it begins), as a change from alpha 0. With ``G`` the direction's change and ``GR`` / ``GM`` the random
directions' mean / largest |change|: ``causal`` if ``G >= MIN_CONCEPT``, ``G > GM`` and ``G >= 2 GR``; ``weak`` if
``G >= MIN_CONCEPT`` and ``G > GR``; else ``no effect``. The reported verdict is the stronger of the two, and
``verdict_metric`` says which one.

Both are read at the largest alpha the damage check (:mod:`neurotrace.lab.effects.damage`) does not call
destructive; when every alpha is destructive the verdict is ``destructive`` and the hint says to try smaller
alphas.
"""

import re
from collections.abc import Sequence

from neurotrace.lab.steering.schema import Verdict

MIN_CONCEPT = 0.02        # concept words per word of steered text (about one word in 50)
RANK = {"destructive": -1, "no effect": 0, "weak": 1, "confounded": 2, "causal": 3}
WORD = re.compile(r"[\w']+")
RANDOM_RATIO = 3.0
SHUFFLED_RATIO = 2.0
CONTROL_FRACTION = 0.5


def verdict(e: float, r: float, s: float | None, c: float | None, min_effect: float) -> Verdict:
    if e < min_effect or e <= r:
        return "no effect"
    if e <= RANDOM_RATIO * r:
        return "weak"
    shuffled_ok = s is None or e > SHUFFLED_RATIO * s
    control_ok = c is None or c < CONTROL_FRACTION * e
    return "causal" if shuffled_ok and control_ok else "confounded"


def describe(min_effect: float) -> list[str]:
    """The rules in words, for the report."""
    return [f"no effect: E < {min_effect} or E <= R",
            f"causal: E > {RANDOM_RATIO:g} R, E > {SHUFFLED_RATIO:g} S (if a shuffled control exists) and "
            f"C < {CONTROL_FRACTION:g} E (if control prompts were given)",
            "confounded: E > 3 R but the shuffled or control-prompt criterion fails",
            "weak: otherwise (R < E <= 3 R)",
            f"generations: causal if the concept score rises >= {MIN_CONCEPT} per word, above every random "
            "direction and >= 2x their mean; the stronger of the two verdicts is reported",
            "both are read at the largest alpha that is not destructive (damage check on neutral text); "
            "destructive if every alpha is",
            "E, R, S, C: |mean change in p(targets)| at the largest |alpha| for the direction, random directions "
            "(mean), the shuffled direction and the direction on control prompts"]


def concept_score(text: str, concept: Sequence[str], contrast: Sequence[str]) -> float:
    """(concept words - contrast words) per word of ``text``; a word counts if it begins with a listed word."""
    words = [w.lower() for w in WORD.findall(text)]
    if not words:
        return 0.0
    pos = tuple(c.strip().lower() for c in concept if c.strip())
    neg = tuple(c.strip().lower() for c in contrast if c.strip())
    hits = sum(1 for w in words if pos and w.startswith(pos)) - sum(1 for w in words if neg and w.startswith(neg))
    return hits / len(words)


def concept_verdict(g: float, randoms: Sequence[float]) -> Verdict:
    """The generations' verdict from the direction's change ``g`` and the random directions' changes."""
    gm = max((abs(r) for r in randoms), default=0.0)
    gr = sum(abs(r) for r in randoms) / len(randoms) if randoms else 0.0
    if g < MIN_CONCEPT or g <= gr:
        return "no effect"
    return "causal" if g > gm and g >= 2 * gr else "weak"


def stronger(a: Verdict, b: Verdict | None) -> tuple[Verdict, bool]:
    """(the stronger verdict, whether ``b`` won)."""
    if b is None or RANK[a] >= RANK[b]:
        return a, False
    return b, True
