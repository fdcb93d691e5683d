"""One model's records -> its averages (mean, band, n per token category) and readings."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from neurotrace.lab.tracing import readings as rd
from neurotrace.lab.tracing.buckets import average, bucket_labels, fact_rows
from neurotrace.lab.tracing.schema import FactRecord, ModelRecord, Readings, SkippedFact, TraceRequest


@dataclass
class ModelInfo:
    """What the summary needs to know about a model once it is no longer leased."""

    model: str
    kind: str
    family: str
    n_layers: int
    n_heads: int | None
    fingerprint: str
    window: int
    noise_std: float | None
    noise_std_from: str


def _curves_mean(known: Sequence[FactRecord]) -> dict[str, list[float]]:
    out = {}
    for key in ("scored_patch", "subject_patch", "context_patch"):
        rows = [getattr(f.curves, key) for f in known if getattr(f.curves, key) is not None]
        if rows:
            out[key] = torch.tensor(rows).mean(0).tolist()
    return out


def summarize_model(request: TraceRequest, info: ModelInfo, facts: Sequence[FactRecord],
                    skipped: Sequence[SkippedFact]) -> ModelRecord:
    """Averages over the known facts, their readings, and the model's record for trace_results.json."""
    rome = request.rome_compat
    labels = bucket_labels(rome)
    known = [f for f in facts if f.correct]
    avgs = {}
    for k in request.kinds:
        rows = [fact_rows(torch.tensor(f.indirect[k]), f.categories, f.subject_range, f.predict_pos, rome)
                for f in known]
        avgs[k] = average(rows, info.n_layers, len(labels), rome)
    total = (sum(f.p_clean - f.p_corrupted for f in known) / len(known)) if known else 0.0
    found = rd.ranges(avgs, labels) if known else []
    readings = Readings(
        buckets=labels, bucket_n=next(iter(avgs.values())).n if avgs else [], min_effect=rd.MIN_EFFECT,
        ranges=found, handoff_layer=rd.handoff_layer(avgs, rome) if known else None,
        arrival_layer=rd.arrival_layer(avgs, rome, total) if known else None,
        layer0_artifact=rd.layer0_artifacts(avgs, info.window, request.corruption.kind == "noise") if known else [],
        context=rd.context(known), top_heads=rd.top_heads(known), approx=rd.approx_checks(facts))
    n = max(len(facts), 1)
    return ModelRecord(
        model=info.model, kind=info.kind, family=info.family, n_layers=info.n_layers, n_heads=info.n_heads,
        fingerprint=info.fingerprint, window=info.window, noise_std=info.noise_std,
        noise_std_from=info.noise_std_from, facts=list(facts), skipped=list(skipped),
        aie={k: a.mean.tolist() if known else [] for k, a in avgs.items()},
        aie_band={k: a.band.tolist() if known else [] for k, a in avgs.items()}, categories=labels,
        peak=rd.peak(found, rome), readings=readings, curves_mean=_curves_mean(known), n_known=len(known),
        unknown_facts=[f.fact_id or f.subject for f in facts if not f.correct],
        mean_p_clean=sum(f.p_clean for f in facts) / n, mean_p_corrupted=sum(f.p_corrupted for f in facts) / n,
        notes=sorted({note for f in facts for note in f.notes}))
