"""clamp_sweep in bfloat16: the rows recomputed in float32, and whether a reading of the summary would change.

The reported quantity of a (prompt, setting) row is its greedy generation (token ids) and, through it, the
row's collapse flag. The readings of the summary are: how many baselines collapsed and how many were recovered,
and per requested group its best value, its recoveries and its verdict against the controls.

Rows recomputed in float32 with the float32 model (the bfloat16 run's other rows stay as they are):

* the deciding rows: every collapsed baseline, and its row at each requested group's best value and at each
  control's best value (these make ``B``, ``R`` and ``C_k`` of the verdict,
  :mod:`neurotrace.lab.clamping.verdict`);
* a seeded random sample of the other rows: :data:`RECHECK_FRACTION` of all rows, at least :data:`RECHECK_MIN`
  (a baseline that is healthy in bfloat16 but would collapse in float32 is found only if sampled).

A rechecked row agrees when its float32 tokens equal the bfloat16 ones. Its difference is the fraction of its
generated tokens that differ, position by position (0 = identical, 1 = different from the first token); the
largest over the rechecked rows is ``max_abs_diff``. The readings are then recomputed with the float32 rows in
place of the bfloat16 ones, and each reading that changes is named.
"""

import math
from dataclasses import dataclass, field

from neurotrace.lab.clamping.prompt_grid import PromptItem
from neurotrace.lab.clamping.report import summarise
from neurotrace.lab.clamping.schema import ClampSweepRequest
from neurotrace.lab.clamping.sweep import Condition, Row, SweepOutput, run_rows, score_rows
from neurotrace.lab.clamping.verdict import group_verdicts
from neurotrace.lab.model.runtime.precision import Agreement, agreement, changed_readings, choose
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter

QUANTITY = "generated tokens (fraction of a row's tokens that differ)"
RERUN = "clamp_sweep with the same request and precision='float32'"

RECHECK_FRACTION = 0.03     # of all rows, beside the deciding ones
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
    diffs: list[float] = field(default_factory=list)   # per picked row: the fraction of its tokens that differ


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
    out: list[int] = [index[(p, 0)] for p in sorted(collapsed)]
    for ci in best:
        out += [index[(p, ci)] for p in sorted(collapsed) if (p, ci) in index]
    return list(dict.fromkeys(out))


def pick_rows(rows: list[Row], conds: list[Condition], n_controls: int, seed: int) -> tuple[list[int], int]:
    """(row indices to recheck, deciding rows first, and how many of them are deciding rows)."""
    peaks, rand = choose(len(rows), deciding_rows(rows, conds, n_controls),
                         max(RECHECK_MIN, math.ceil(RECHECK_FRACTION * len(rows))), seed)
    return peaks + rand, len(peaks)


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
    return compare_rows(out.rows, again, conds, request.controls, check)


def compare_rows(rows: list[Row], again: list[Row], conds: list[Condition], n_controls: int,
                 check: RowsCheck) -> RowsCheck:
    """Fill ``check`` from the float32 rows ``again`` (one per ``check.picked`` row of ``rows``)."""
    merged = list(rows)
    for i, row in zip(check.picked, again, strict=True):
        frac, step = _diff(rows[i].tokens, row.tokens)
        check.diffs.append(frac)
        if frac:
            check.n_differ += 1
            check.max_token_diff = max(check.max_token_diff, frac)
            if step is not None and (check.first_diff_step is None or step < check.first_diff_step):
                check.first_diff_step = step
        check.n_flips += bool(rows[i].reasons) != bool(row.reasons)
        merged[i] = row
    check.changed = changed_readings(readings(rows, conds, n_controls), readings(merged, conds, n_controls))
    return check


def row_label(row: Row, prompts: list[PromptItem], conds: list[Condition]) -> str:
    """'<core id> <neurons>=<value>' (a control's neurons shortened to its name)."""
    cond = conds[row.cond]
    value = "baseline" if cond.value is None else f"{cond.value:g}"
    return f"{prompts[row.prompt].core_id} {cond.label.split('[')[0]}={value}"


def to_agreement(check: RowsCheck, rows: list[Row], prompts: list[PromptItem], conds: list[Condition],
                 seed: int) -> Agreement:
    """The shared :class:`Agreement` of the recheck, its summary naming the rows and flips behind it."""
    labels = [row_label(rows[i], prompts, conds) for i in check.picked]
    out = agreement(QUANTITY, labels, check.n_deciding, seed, check.diffs, [0.0] * len(check.diffs),
                    check.changed, RERUN)
    first = "" if check.first_diff_step is None else f", the earliest at generated token {check.first_diff_step}"
    text = (f"bfloat16 agreement with float32: {len(labels)} of {check.n_rows} rows regenerated in float32 "
            f"({check.n_deciding} deciding, {len(labels) - check.n_deciding} seeded random); {check.n_differ} differ "
            f"in their tokens{first} (largest differing fraction {out.max_abs_diff:.2g}), {check.n_flips} collapse "
            "flag(s) flip")
    if check.changed:
        shown = "; ".join(check.changed[:3]) + ("; ..." if len(check.changed) > 3 else "")
        out.summary = f"{text}; in float32 {len(check.changed)} reading(s) would change ({shown}): rerun {RERUN}."
    else:
        out.summary = f"{text}; no reading would change."
    return out


def recheck_rows_bound(n_prompts: int, groups: int, controls: int, rows: int) -> int:
    """At most how many rows the recheck regenerates (the cost model's count): every deciding row, plus the
    random sample."""
    return min(rows, n_prompts * (1 + groups * (1 + controls)) + max(RECHECK_MIN, math.ceil(RECHECK_FRACTION * rows)))
