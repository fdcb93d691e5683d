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
"""

from neurotrace.lab.steering.schema import Verdict

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
            "E, R, S, C: |mean change in p(targets)| at the largest |alpha| for the direction, random directions "
            "(mean), the shuffled direction and the direction on control prompts"]
