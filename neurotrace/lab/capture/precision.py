"""capture in bfloat16: the steps (or corpus contexts) recomputed in float32, and how far their states moved.

The reported quantity is the stored states: every recorded row at every captured site (in the stored dtype).
A capture has no verdict; its readings are the generated outputs of its steps (an episode's later steps
continue them).

Steps recomputed in float32 with the float32 model: a seeded random sample of :data:`RECHECK_FRACTION` of the
steps or contexts (at least :data:`RECHECK_MIN`; every one when fewer). A step is teacher-forced on exactly the
tokens the bfloat16 run recorded (its prompt and generated tokens), with the same step-scoped edits, so its
float32 states are row for row comparable; the float32 logits then say whether float32 would have generated
the same tokens (its greedy choice at every generated position).

Differences: ``max_abs_diff`` = the largest |float32 - bfloat16| of a rechecked row (every site, every
dimension); ``max_rel_diff`` = that over the largest |float32| value of the site; ``rms_rel_diff`` = the
root-mean-square difference over the float32 states' root-mean-square, the largest over sites; a step whose
float32 greedy token differs is named with the first generated position where it does.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurotrace.lab.model.runtime.precision import Agreement, agreement, choose

RECHECK_FRACTION = 0.05
RECHECK_MIN = 2
RERUN = "capture with the same request and precision='float32'"


def pick_steps(n: int, seed: int) -> dict[int, dict[str, Any]]:
    """The steps (or contexts) to recheck, each with an empty dict for its bfloat16 rows."""
    _, rand = choose(n, [], max(RECHECK_MIN, math.ceil(RECHECK_FRACTION * n)), seed)
    return {i: {} for i in rand}


@dataclass
class StatesCheck:
    """What the float32 recheck of a bfloat16 capture found."""

    picked: list[int]                       # step (or context) indices rechecked in float32
    n_steps: int
    n_rows: int = 0                         # rows compared (per site)
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    rms_rel_diff: float = 0.0
    site: str = ""                          # the site of the largest difference
    changed: list[str] = field(default_factory=list)   # steps whose float32 greedy output differs
    diffs: dict[int, float] = field(default_factory=dict)  # step -> its largest |difference| (any site)
    current: int = -1                       # the step whose rows add() compares now

    def add(self, site: str, bf16: np.ndarray, f32: np.ndarray) -> None:
        """Compare one step's rows at ``site`` (both [rows, D] in the stored dtype)."""
        if bf16.size == 0:
            return
        a, b = bf16.astype(np.float64), f32.astype(np.float64)
        diff = float(np.abs(a - b).max())
        scale = float(np.abs(b).max())
        rms = float(np.sqrt(np.mean((a - b) ** 2)) / max(np.sqrt(np.mean(b ** 2)), 1e-30))
        if diff > self.max_abs_diff:
            self.max_abs_diff, self.site = diff, site
        self.diffs[self.current] = max(self.diffs.get(self.current, 0.0), diff)
        self.max_rel_diff = max(self.max_rel_diff, diff / max(scale, 1e-30))
        self.rms_rel_diff = max(self.rms_rel_diff, rms)

    def greedy(self, step: int, generated: list[int], f32_choices: list[int]) -> None:
        """Name ``step`` when float32's greedy choice differs from a token the bfloat16 run generated."""
        first = next((k for k, (a, b) in enumerate(zip(generated, f32_choices, strict=False)) if a != b), None)
        if first is not None:
            self.changed.append(f"step {step}'s output: float32 picks another token at generated position {first}")


def to_agreement(check: StatesCheck, seed: int, unit: str) -> Agreement:
    """The shared :class:`Agreement` (per recomputed step: its largest |difference|) with the relative errors."""
    labels = [f"{unit[:-1]} {i}" for i in check.picked]
    out = agreement("captured state", labels, 0, seed, [check.diffs.get(i, 0.0) for i in check.picked],
                    [0.0] * len(labels), check.changed, RERUN)
    out.summary = (f"{out.summary[:-1]} ({len(labels)} of {check.n_steps} {unit}, {check.n_rows} rows per site "
                   f"recomputed; largest at {check.site or '-'}; relative to the site's largest |value| "
                   f"{check.max_rel_diff:.2g}, root-mean-square relative {check.rms_rel_diff:.2g}).")
    return out
