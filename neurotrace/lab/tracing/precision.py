"""How far a bfloat16 trace agrees with float32: measured on every run, never assumed.

After a model's facts are traced in bfloat16, each fact is recomputed in float32 on a sample of its cells:
its **peaks** (the ``PEAKS`` largest indirect effects of each component, among the cells the fact's peak is
read from) and ``RANDOM`` seeded others (the same noise draw: the noise is always drawn in float32). The
corrupted p(target) is recomputed too, so the compared quantity is the indirect effect itself. Then:

* the largest |bfloat16 - float32| indirect effect over the recomputed cells, and where;
* the readings with the float32 values put in place of the bfloat16 ones (each fact's peak, the model's
  peak, every half-max range, hand-off, arrival, layer-0 flags, approx verdicts): those that differ are
  named, with the float32 run to make.

Under ``mode='approx'`` the reported grid is the attribution-patching estimate, recomputed whole in float32
(one forward and backward per fact): every cell is compared (the peaks counted as such).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from neurotrace.lab.model.runtime.precision import Agreement, agreement, changed_readings, choose
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.lab.tracing.grids.grid import Corrupted, approx_grid, corrupted_probs, exact_grid
from neurotrace.lab.tracing.noise import fact_seed
from neurotrace.lab.tracing.prepare import Checked
from neurotrace.lab.tracing.readings import ModelInfo, summarize_model
from neurotrace.lab.tracing.schema import FactCurves, FactPeak, FactRecord, ModelRecord, TraceRequest

PEAKS = 2        # per component: the largest indirect effects, always recomputed
RANDOM = 6       # per fact: seeded random cells of the rest


def eligible(k: str, pos: int, predict_pos: int) -> bool:
    """Cells a fact's peak is read from: the residual before the scored position, every mlp/attn cell."""
    return not (k == "resid" and pos >= predict_pos)


def fact_peak(indirect: dict[str, Tensor], predict_pos: int, tokens: Sequence[str]) -> FactPeak:
    """The largest indirect effect of a fact (resid cells at or after the scored position left out, unless
    nothing else is left)."""
    cells = [(float(v[layer, p]), k, layer, p) for k, v in indirect.items() for layer in range(v.shape[0])
             for p in range(v.shape[1]) if eligible(k, p, predict_pos)] or \
            [(float(v[layer, p]), k, layer, p) for k, v in indirect.items() for layer in range(v.shape[0])
             for p in range(v.shape[1])]
    eff, component, layer, pos = max(cells)
    return FactPeak(component=component, layer=layer, pos=pos, token=tokens[pos], effect=eff)


@dataclass
class Recomputed:
    """One fact's float32 recomputation: flat cell indices, their labels, bfloat16 and float32 values."""

    cells: list[int]
    n_peaks: int
    labels: list[str]
    reduced: list[float]
    reference: list[float]
    p_corrupted: float
    indirect: dict[str, Tensor]        # the bfloat16 grid with the float32 values in place


def peak_cells(indirect: dict[str, Tensor], predict_pos: int) -> list[int]:
    """Flat indices (component, layer, position) of each component's ``PEAKS`` largest eligible effects."""
    out: list[int] = []
    for ci, (k, grid) in enumerate(indirect.items()):
        n_layers, n_pos = grid.shape
        flat = grid.flatten().clone()
        mask = torch.tensor([eligible(k, i % n_pos, predict_pos) for i in range(len(flat))])
        if mask.any():
            flat[~mask] = float("-inf")
        out += [ci * n_layers * n_pos + int(i) for i in flat.argsort(descending=True)[:PEAKS]]
    return out


def recompute_fact(request: TraceRequest, lm32: LoadedModel, checked: Checked, record: FactRecord, corr: Corrupted,
                   window: int) -> Recomputed:
    """The float32 values of one bfloat16-traced fact on its peaks and a seeded random sample."""
    prep, components = checked.prep, list(record.indirect)
    reduced = {k: torch.tensor(record.indirect[k]) for k in components}
    n_layers, n_pos = next(iter(reduced.values())).shape
    p32 = float(corrupted_probs(lm32, prep, corr).mean())
    if request.mode == "approx":
        grid32 = approx_grid(lm32, prep, corr, components, window)
        peaks = peak_cells(reduced, prep.predict_pos)
        rest = [i for i in range(len(components) * n_layers * n_pos) if i not in set(peaks)]
        return _recomputed(reduced, grid32, peaks, rest, components, n_layers, n_pos, p32, record.tokens)
    peaks, rand = choose(len(components) * n_layers * n_pos, peak_cells(reduced, prep.predict_pos), RANDOM,
                         fact_seed(request.seed, prep.fact) + 1)
    restored = exact_grid(lm32, prep, corr, components, window, NULL_REPORTER, cells=peaks + rand)
    return _recomputed(reduced, {k: v - p32 for k, v in restored.items()}, peaks, rand, components, n_layers,
                       n_pos, p32, record.tokens)


def _recomputed(reduced: dict[str, Tensor], grid32: dict[str, Tensor], peaks: list[int], rand: list[int],
                components: list[str], n_layers: int, n_pos: int, p32: float, tokens: Sequence[str]) -> Recomputed:
    patched = {k: v.clone() for k, v in reduced.items()}
    labels, a, b = [], [], []
    for n, c in enumerate(peaks + rand):
        ci, rem = divmod(c, n_layers * n_pos)
        layer, pos = divmod(rem, n_pos)
        k = components[ci]
        value = float(grid32[k][layer, pos])
        patched[k][layer, pos] = value
        labels.append(f"{k} L{layer} {tokens[pos]!r}{' (peak)' if n < len(peaks) else ''}")
        a.append(float(reduced[k][layer, pos]))
        b.append(value)
    return Recomputed(peaks + rand, len(peaks), labels, a, b, p32, patched)


def patched_record(record: FactRecord, redo: Recomputed) -> FactRecord:
    """The fact's record with the recomputed float32 values in place of the bfloat16 ones."""
    indirect = redo.indirect
    restored = {k: v + redo.p_corrupted for k, v in indirect.items()}
    curves = record.curves.model_dump()
    if "resid" in restored:
        curves["scored_patch"] = restored["resid"][:, record.predict_pos].tolist()
        curves["subject_patch"] = restored["resid"][:, record.subject_range[1] - 1].tolist()
    return record.model_copy(update={
        "indirect": {k: v.tolist() for k, v in indirect.items()},
        "restored": {k: v.tolist() for k, v in restored.items()},
        "p_corrupted": redo.p_corrupted, "clean_minus_corrupt": record.p_clean - redo.p_corrupted,
        "peak": fact_peak(indirect, record.predict_pos, record.tokens), "curves": FactCurves(**curves)})


def readings_of(model: ModelRecord) -> dict[str, Any]:
    """The named readings a trace summary states, as plain values."""
    r = model.readings
    out: dict[str, Any] = {f"peak of {f.fact_id or f.subject}": f"{f.peak.component} L{f.peak.layer} {f.peak.token!r}"
                           for f in model.facts}
    if model.peak is not None:
        out["model peak"] = f"{model.peak.component} L{model.peak.layer} ({model.peak.position})"
    for rng in r.ranges:
        out[f"half-max range of {rng.component} at the {rng.position}"] = (rng.first, rng.last)
    out["hand-off layer"], out["arrival layer"] = r.handoff_layer, r.arrival_layer
    out["layer-0 artifact"] = tuple(r.layer0_artifact)
    for check in r.approx:
        out[f"approx verdict for {check.component}"] = check.verdict
    return out


def measure(request: TraceRequest, info: ModelInfo, model: ModelRecord, redone: Sequence[Recomputed],
            skipped: Sequence[Any]) -> Agreement:
    """The model's :class:`Agreement`: every fact's recomputed cells, and the readings that would change."""
    patched = [patched_record(f, r) for f, r in zip(model.facts, redone, strict=True)]
    after = summarize_model(request, info, patched, skipped)
    changed = changed_readings(readings_of(model), readings_of(after))
    labels, reduced, reference, n_peaks = [], [], [], 0
    for f, r in zip(model.facts, redone, strict=True):
        labels += [f"{f.fact_id or f.subject}: {label}" for label in r.labels]
        reduced += r.reduced
        reference += r.reference
        n_peaks += r.n_peaks
    peaks_first = sorted(range(len(labels)), key=lambda i: not labels[i].endswith("(peak)"))
    rerun = f"trace on {info.model} with the same request and precision='float32'"
    found = agreement("indirect effect", [labels[i] for i in peaks_first], n_peaks, request.seed,
                      [reduced[i] for i in peaks_first], [reference[i] for i in peaks_first], changed, rerun)
    if len(found.chosen) > MAX_LABELS:
        found = found.model_copy(update={"chosen": [*found.chosen[:MAX_LABELS],
                                                    f"... {len(found.chosen) - MAX_LABELS} more"]})
    return found


MAX_LABELS = 40   # recomputed cells named in the result (the count is always whole)
