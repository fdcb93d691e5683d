"""clamp_sweep in bfloat16: the rows recomputed in float32, and whether a reading of the summary would change.

The reported quantity of a (prompt, setting) row is its greedy generation (token ids) and, through it, the
row's collapse flag. The readings of the summary are: how many baselines collapsed and how many were recovered,
and per requested group its best value, its recoveries and its verdict against the controls.

Rows recomputed in float32 with the float32 model (the bfloat16 run's other rows stay as they are):

* the deciding rows: for each requested group, the rows at its best value that recover a collapsed baseline,
  with those baselines; for each control, the rows at its own best value that recover one (these numbers make
  the verdict: ``R``, ``I`` and ``C_k`` of :mod:`neurotrace.lab.clamping.verdict`);
* a seeded random sample of the other rows: :data:`RECHECK_FRACTION` of all rows, at least :data:`RECHECK_MIN`.

A rechecked row agrees when its float32 tokens equal the bfloat16 ones. Its difference is the fraction of its
generated tokens that differ, position by position (0 = identical, 1 = different from the first token); the
largest over the rechecked rows is ``max_abs_diff``. The readings are then recomputed with the float32 rows in
place of the bfloat16 ones, and each reading that changes is named.
"""

import math
from dataclasses import dataclass, field

import torch

from neurotrace.lab.clamping.report import summarise
from neurotrace.lab.clamping.schema import ClampSweepRequest
from neurotrace.lab.clamping.sweep import Condition, Row, SweepOutput, run_rows, score_rows
from neurotrace.lab.clamping.verdict import group_verdicts
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter
from neurotrace.lab.seeding import make_generator

RECHECK_FRACTION = 0.05     # of all rows, beside the deciding ones
RECHECK_MIN = 4             # random rows rechecked at least (all of them when fewer)


@dataclass
class RowsCheck:
    """What the float32 recheck of a bfloat16 sweep found."""

    picked: list[int]                       # indices into the sweep's rows, rechecked in float32
    n_deciding: int                         # of which deciding rows
    n_rows: int                             # rows of the sweep
    n_differ: int = 0                       # rechecked rows whose tokens differ
    n_flips: int = 0                        # rechecked rows whose collapse flag differs
    max_token_diff: float = 0.0             # largest fraction of a row's tokens that differ
    first_diff_step: int | None = None      # earliest generation step where a rechecked row differs
    changed: list[str] = field(default_factory=list)   # readings that change with the float32 rows


def _n_base(rows: list[Row]) -> int:
    return sum(1 for r in rows if r.cond == 0 and r.reasons)


def deciding_rows(rows: list[Row], conds: list[Condition], n_controls: int) -> list[int]:
    """Indices of the rows the verdicts rest on (see the module docstring)."""
    values = summarise(rows, conds)
    index = {(r.prompt, r.cond): i for i, r in enumerate(rows)}
    collapsed = {r.prompt for r in rows if r.cond == 0 and r.reasons}
    cond_index = {(c.label, c.value, c.control_of): ci for ci, c in enumerate(conds)}
    best: list[int] = []
    for g in group_verdicts(values, len(collapsed), n_controls):
        if g.best_value is not None:
            best.append(cond_index[(g.neurons, g.best_value, None)])
    per_control: dict[str, tuple[int, int]] = {}            # control label -> (most recoveries, its condition)
    for s in values:
        if s.control_of is not None and s.n_improved > per_control.get(s.neurons, (0, -1))[0]:
            per_control[s.neurons] = (s.n_improved, cond_index[(s.neurons, s.value, s.control_of)])
    best += [ci for _, ci in per_control.values()]
    out: set[int] = set()
    for ci in best:
        for p in collapsed:
            i = index.get((p, ci))
            if i is not None and not rows[i].reasons:
                out |= {i, index[(p, 0)]}
    return sorted(out)


def pick_rows(rows: list[Row], conds: list[Condition], n_controls: int, seed: int) -> tuple[list[int], int]:
    """(sorted row indices to recheck, how many of them are deciding rows)."""
    must = deciding_rows(rows, conds, n_controls)
    rest = [i for i in range(len(rows)) if i not in set(must)]
    k = min(len(rest), max(RECHECK_MIN, math.ceil(RECHECK_FRACTION * len(rows))))
    order = torch.randperm(len(rest), generator=make_generator(seed))[:k].tolist()
    return sorted(set(must) | {rest[j] for j in order}), len(must)


def readings(rows: list[Row], conds: list[Condition], n_controls: int) -> dict[str, str]:
    """The summary's readings of these rows (damage apart: it is measured in float32 either way)."""
    values = summarise(rows, conds)
    base = {r.prompt: bool(r.reasons) for r in rows if r.cond == 0}
    recovered = {r.prompt for r in rows if r.cond and base[r.prompt] and not r.reasons
                 and conds[r.cond].control_of is None}
    out = {"collapsed baselines": str(sum(base.values())), "recovered baselines": str(len(recovered))}
    for g in group_verdicts(values, sum(base.values()), n_controls):
        out[f"{g.neurons} best value"] = "none" if g.best_value is None else f"{g.best_value:g}"
        out[f"{g.neurons} recoveries"] = str(g.n_recovered)
        out[f"{g.neurons} verdict"] = str(g.verdict)
    return out


def _diff(a: list[int], b: list[int]) -> tuple[float, int | None]:
    """(fraction of positions whose tokens differ, the first such position)."""
    n = max(len(a), len(b), 1)
    diffs = [i for i in range(n) if (a[i] if i < len(a) else None) != (b[i] if i < len(b) else None)]
    return len(diffs) / n, (diffs[0] if diffs else None)


def recheck(lm32: LoadedModel, request: ClampSweepRequest, conds: list[Condition], prompt_ids: list[list[int]],
            out: SweepOutput, reporter: Reporter) -> RowsCheck:
    """Recompute the picked rows with the float32 model ``lm32`` and compare (see the module docstring)."""
    picked, n_deciding = pick_rows(out.rows, conds, request.controls, request.seed)
    check = RowsCheck(picked=picked, n_deciding=n_deciding, n_rows=len(out.rows))
    if not picked:
        return check
    again = run_rows(lm32, request, conds, prompt_ids, reporter,
                     only=[(out.rows[i].prompt, out.rows[i].cond) for i in picked]).rows
    score_rows(again, lm32, request.thresholds)
    merged = list(out.rows)
    for i, row in zip(picked, again, strict=True):
        frac, step = _diff(out.rows[i].tokens, row.tokens)
        if frac:
            check.n_differ += 1
            check.max_token_diff = max(check.max_token_diff, frac)
            if step is not None and (check.first_diff_step is None or step < check.first_diff_step):
                check.first_diff_step = step
        check.n_flips += bool(out.rows[i].reasons) != bool(row.reasons)
        merged[i] = row
    before, after = readings(out.rows, conds, request.controls), readings(merged, conds, request.controls)
    check.changed = [f"{k}: {before[k]} -> {after.get(k)} in float32" for k in before if before[k] != after.get(k)]
    return check
