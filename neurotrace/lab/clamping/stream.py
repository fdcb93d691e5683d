"""clamp_sweep's rows on their way to disk, so memory does not grow with the grid.

Rows are generated in batches sorted by prompt length (:func:`~neurotrace.lab.clamping.sweep.run_rows`),
and every condition of one prompt is generated before the next prompt's. :class:`RowSink` takes each
finished batch, scores it, and once a prompt's rows are all in (the *unit*), folds them into per-condition
tallies, keeps the prompt's collapsed case if its baseline collapsed, and appends the prompt's table rows
and generations to two spool files (hidden ``.tmp`` files in the run directory), noting where they went.
:meth:`RowSink.finish` then writes ``tables/clamp_sweep.csv`` and ``tables/generations.jsonl`` in prompt
order by copying those blocks into a temp file that is renamed into place. Rows held in memory: at most a
batch plus one prompt's conditions (:attr:`RowSink.most_held`), whatever the number of prompts and values.
The files and summaries are byte for byte those of holding every row (same rows, same order, same sums).
"""

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurotrace.lab.clamping.prompt_grid import PromptItem
from neurotrace.lab.clamping.schema import CollapsedCase, RecoveredOutput, ValueSummary
from neurotrace.lab.clamping.sweep import Condition, Row, score_rows
from neurotrace.lab.effects import METRIC_NAMES, CollapseThresholds, collapse_type
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.runs import Run

TABLE = "tables/clamp_sweep.csv"
GENERATIONS = "tables/generations.jsonl"
TABLE_FIELDS = ["core_id", "type", "level", "neurons", "sweep", "prompt", "output", *METRIC_NAMES, "is_collapsed",
                "collapse_type", "collapse_reasons", "intervention_improves_baseline"]
MEANS = ("distinct_2", "loop_frac", "norm_entropy", "compression_ratio")


def _value_text(v: float | None) -> str:
    return "baseline" if v is None else f"{v:g}"


@dataclass
class Tally:
    """One condition's running counts and metric sums (summed in generation order, as a full list would)."""

    n: int = 0
    n_collapsed: int = 0
    n_improved: int = 0
    n_induced: int = 0
    types: Counter = field(default_factory=Counter)
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MEANS, 0))


class RowSink:
    """Scores finished rows, tallies them per condition and spools them to disk per prompt."""

    def __init__(self, run: Run, prompts: list[PromptItem], prompt_ids: list[list[int]], conds: list[Condition],
                 lm: LoadedModel, thresholds: CollapseThresholds) -> None:
        self.run, self.prompts, self.prompt_ids, self.conds = run, prompts, prompt_ids, conds
        self.lm, self.thresholds = lm, thresholds
        self.tallies = [Tally() for _ in conds]
        self.cases: dict[int, CollapsedCase] = {}
        self.index = np.full((len(prompts), 4), -1, dtype=np.int64)   # csv offset, length, jsonl offset, length
        self._pending: dict[int, Row] = {}
        self.n_rows = 0
        self.most_held = 0    # the most rows held in memory at once (a batch plus one prompt's conditions)
        self._spools = [self._spool(TABLE), self._spool(GENERATIONS)]

    def _spool(self, rel: str) -> Any:
        path = self.run.dir / Path(rel).with_name(f".{Path(rel).name}.spool.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "w+b")

    def add(self, batch: list[Row]) -> None:
        """Take a generated batch (tokens filled), in generation order."""
        self.most_held = max(self.most_held, len(batch) + len(self._pending))
        score_rows([r for r in batch if not r.metrics], self.lm, self.thresholds)   # a bfloat16 sweep's are
        for row in batch:
            self._pending[row.cond] = row
            if len(self._pending) == len(self.conds):
                self._close(row.prompt)

    def _close(self, p: int) -> None:
        rows = [self._pending[c] for c in range(len(self.conds))]
        self._pending = {}
        base_collapsed = bool(rows[0].reasons)
        for ci, r in enumerate(rows):
            t = self.tallies[ci]
            t.n += 1
            t.n_collapsed += bool(r.reasons)
            t.n_improved += bool(ci and base_collapsed and not r.reasons)
            t.n_induced += bool(ci and not base_collapsed and r.reasons)
            t.types[collapse_type(r.reasons)] += 1
            for name in MEANS:
                t.sums[name] += r.metrics[name]
        self.n_rows += len(rows)
        table = [self._table_row(p, ci, r, base_collapsed) for ci, r in enumerate(rows)]
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=TABLE_FIELDS, lineterminator="\n", extrasaction="ignore").writerows(table)
        gens = "".join(json.dumps({**{k: t[k] for k in TABLE_FIELDS[:7]}, "prompt_ids": self.prompt_ids[p],
                                   "tokens": r.tokens}) + "\n" for t, r in zip(table, rows, strict=True))
        for k, (fh, text) in enumerate(zip(self._spools, (buf.getvalue(), gens), strict=True)):
            data = text.encode("utf-8")
            self.index[p, 2 * k:2 * k + 2] = (fh.tell(), len(data))
            fh.write(data)
        if base_collapsed:
            self.cases[p] = self._case(p, rows)

    def _table_row(self, p: int, ci: int, r: Row, base_collapsed: bool) -> dict[str, Any]:
        item, c = self.prompts[p], self.conds[ci]
        flag = None if ci == 0 or not base_collapsed else not r.reasons
        return {"core_id": item.core_id, "type": item.type, "level": item.level, "neurons": c.label,
                "sweep": _value_text(c.value), "prompt": item.prompt, "output": r.text,
                **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.metrics.items()},
                "is_collapsed": bool(r.reasons), "collapse_type": collapse_type(r.reasons) or "",
                "collapse_reasons": "; ".join(r.reasons), "intervention_improves_baseline": "" if flag is None else flag}

    def _case(self, p: int, rows: list[Row]) -> CollapsedCase:
        base, conds, item = rows[0], self.conds, self.prompts[p]
        rec = [RecoveredOutput(neurons=conds[c].label, value=conds[c].value, output=r.text,
                               distinct_2=r.metrics["distinct_2"], loop_frac=r.metrics["loop_frac"])
               for c, r in enumerate(rows) if c and not r.reasons and conds[c].control_of is None]
        n_ctrl = sum(1 for c, r in enumerate(rows) if c and not r.reasons and conds[c].control_of)
        return CollapsedCase(core_id=item.core_id or "", type=item.type or "", level=item.level or "",
                             prompt=item.prompt, baseline=base.text, reasons=list(base.reasons),
                             collapse_type=collapse_type(base.reasons), recovered_by=rec,
                             recovered_by_controls=n_ctrl)

    def collapsed_cases(self) -> list[CollapsedCase]:
        """Each collapsed baseline with the clamped outputs that recovered it, in prompt order."""
        return [self.cases[p] for p in sorted(self.cases)]

    def summaries(self) -> list[ValueSummary]:
        """Per condition (controls included): collapse rate, recoveries, collapse types, mean metrics."""
        n_base = len(self.cases)
        out = []
        for t, cond in zip(self.tallies, self.conds, strict=True):
            n = max(t.n, 1)
            out.append(ValueSummary(
                n_empty=t.types["empty"], n_loop=t.types["loop"], n_repetitive=t.types["repetitive"],
                control_of=cond.control_of, neurons=cond.label, value=cond.value, n=t.n, n_collapsed=t.n_collapsed,
                collapse_rate=t.n_collapsed / n, n_improved=t.n_improved,
                improvement_rate=(t.n_improved / n_base) if n_base else None, n_induced=t.n_induced,
                **{f"mean_{name}": t.sums[name] / n for name in MEANS}))
        return out

    def finish(self) -> str:
        """Write the table and the generations in prompt order (temp file, then rename); the table's URI."""
        uri = ""
        header = io.StringIO()
        csv.DictWriter(header, fieldnames=TABLE_FIELDS, lineterminator="\n").writeheader()
        for k, (rel, first) in enumerate(((TABLE, header.getvalue().encode()), (GENERATIONS, b""))):
            fh = self._spools[k]
            fh.flush()
            final = self.run.dir / rel
            tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as out:
                    out.write(first)
                    for offset, length in self.index[:, 2 * k:2 * k + 2]:
                        if length > 0:
                            fh.seek(int(offset))
                            out.write(fh.read(int(length)))
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
            got = self.run.record_file(rel)
            uri = uri or got
        self.close()
        return uri

    def close(self) -> None:
        """Drop the spools (also when the sweep fails or is cancelled)."""
        for fh in self._spools:
            if not fh.closed:
                fh.close()
                Path(fh.name).unlink(missing_ok=True)
