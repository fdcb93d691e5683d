"""Writing a trace run: trace_results.json (typed records), arrays, figures, the reading and the summary.

The reading states only what the averages support: each effect with its 95% band, n and half-maximum
layer range; MLP against attention at the same token category; where the answer arrives at the scored
position; a layer-0 window artifact flagged with the re-run that settles it; an MLP0-only subject effect
read as an extended embedding, not storage; no layer named for an
effect below the minimum. The ``next`` hints are request JSON built from the tools' request fields
(tests validate them against the request models).
"""

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from neurotrace.lab.runs import Run
from neurotrace.lab.tracing.figures import default_figures, reference_site, site_curve, slug
from neurotrace.lab.tracing.readings import MIN_EFFECT
from neurotrace.lab.tracing.schema import ModelRecord, ModelTrace, TraceRequest, TraceResult, TraceResults

RESULTS_FILE = "trace_results.json"
SUMMARY_CHARS = 2000


def depth_word(layer: int, n_layers: int) -> str:
    d = layer / n_layers
    return "early" if d < 1 / 3 else "middle" if d < 2 / 3 else "late"


def _range(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}-{last}"


def _find(m: ModelRecord, kind: str, position: str):
    return next((r for r in m.readings.ranges if r.component == kind and r.position == position), None)


def _peak_line(m: ModelRecord) -> str:
    p = m.peak
    if p is None:
        return (f"{m.model}: no restoration recovers {MIN_EFFECT} of p(target) at any site: no storage site to "
                "report.")
    if (p.first, p.last) == (0, m.n_layers - 1) and m.n_layers > 1:
        span = "at least half of it at every layer (a flat stretch: no single layer stands out)"
    elif p.first == p.last:
        span = f"confined to layer {p.first} (every other layer is below half of it)"
    else:
        span = f"at least half of it over {_range(p.first, p.last)}"
    return (f"{m.model}: the largest effect is {p.component} at the {p.position}: {p.effect:.3f} +/- {p.band:.3f} "
            f"(95%, n={p.n}) at layer {p.layer} of {m.n_layers} ({depth_word(p.layer, m.n_layers)}); {span}.")


def _mlp_vs_attn(m: ModelRecord) -> str | None:
    if not {"mlp", "attn"} <= set(m.aie):
        return None
    scored = "last token" if "last token" in m.categories else "scored token"
    parts = []
    for position in ("last subject token", scored):
        a, b = _find(m, "mlp", position), _find(m, "attn", position)
        if a is None and b is None:
            continue

        def say(r, name):
            return f"{name} {r.max_effect:.3f} ({_range(r.first, r.last)})" if r else f"{name} < {MIN_EFFECT}"

        lead = "MLP" if (a.max_effect if a else 0) >= (b.max_effect if b else 0) else "attention"
        parts.append(f"at the {position} {lead} leads: {say(a, 'MLP')} vs {say(b, 'attention')}")
    return f"{m.model}: same token category, " + "; ".join(parts) + "." if parts else None


def _resid_line(m: ModelRecord) -> str | None:
    if "resid" not in m.aie:
        return None
    where = "the mask" if m.lm_kind == "masked" else "the last token"
    r = _find(m, "resid", "last subject token")
    bits = [f"restoring the residual at the last subject token matters over {_range(r.first, r.last)}" if r
            else "restoring the residual at the last subject token has no measurable effect"]
    if m.readings.handoff_layer is not None:
        bits.append(f"the effect moves to {where} at layer {m.readings.handoff_layer}")
    if m.readings.arrival_layer is not None:
        bits.append(f"the answer arrives at {where} by layer {m.readings.arrival_layer} (restoring the residual "
                    "there recovers half the total effect)")
    return f"{m.model}: " + "; ".join(bits) + "."


def _subject_token_line(m: ModelRecord) -> str | None:
    """Said only when some fact's subject effect peaks before the last subject token."""
    parts = [f"{r.component} {r.n_facts - r.at_last} of {r.n_facts} (" + ", ".join(r.earlier[:3])
             + (", ..." if len(r.earlier) > 3 else "") + ")" for r in m.readings.subject_tokens if r.at_last < r.n_facts]
    if not parts:
        return None
    return (f"{m.model}: fact by fact, the subject effect peaks before the last subject token in " + "; ".join(parts)
            + ": the 'last subject token' averages leave those tokens out (per-fact maps in plot heatmap).")


def _context_line(m: ModelRecord) -> str | None:
    c = m.readings.context
    if c is None:
        return None
    if not c.measurable:
        return (f"{m.model}: the context swap moves p(target) by only {c.effect:.3f} (< {MIN_EFFECT}): no "
                "measurable context effect.")
    if c.until_layer is None:
        return f"{m.model}: the context swap costs {c.effect:.3f}; restoring the context word never recovers half."
    return (f"{m.model}: the context swap costs {c.effect:.3f}; restoring the context word recovers half of it "
            f"up to layer {c.until_layer}, so the context word matters until then.")


def _caution_lines(m: ModelRecord) -> list[str]:
    out = []
    for k in m.readings.layer0_artifact:
        fix = "window 1 or corruption swap" if m.window > 1 else "corruption swap"
        out.append(f"{m.model}: caution - the {k} peak comes only from windows that contain layer 0 (window "
                   f"{m.window}); under noise, restoring layer 0 repairs the noised embeddings themselves. Re-run "
                   f"with {fix} before reading it as storage.")
    for k in (k for k in m.readings.layer0_embedding if k not in m.readings.layer0_artifact):
        out.append(f"{m.model}: caution - the {k} effect at the subject is only in windows that contain layer 0 "
                   f"(window {m.window}), with nothing after it: that is MLP0 acting as an extended embedding "
                   "(detokenising the subject's tokens), not storage. Rule: read an MLP effect at the subject as "
                   "storage only where windows without layer 0 reach at least half of it.")
    return out + _approx_lines(m) + _head_lines(m)


def _approx_lines(m: ModelRecord) -> list[str]:
    out = []
    for a in m.readings.approx:
        if a.magnitude_ratio is None:
            continue
        how = {"agrees": "agrees in magnitude", "unclear": "is unclear",
               "underestimates": f"underestimates about {1 / max(a.magnitude_ratio, 1e-9):.1f}x",
               "overestimates": f"overestimates about {a.magnitude_ratio:.1f}x"}[a.verdict]
        rho = "n/a" if a.spearman is None else f"{a.spearman:.2f}"
        out.append(f"{m.model}: approx {a.component} vs exact patching on {a.cells} sampled cells: rank correlation "
                   f"{rho}, magnitude ratio {a.magnitude_ratio:.2f} - it {how}.")
    return out


def _head_lines(m: ModelRecord) -> list[str]:
    out = []
    if m.readings.top_heads:
        heads = ", ".join(f"L{h.layer}.H{h.head} {h.effect:+.3f}" for h in m.readings.top_heads)
        out.append(f"{m.model}: top heads restored at the scored position: {heads}.")
    return out


def _precision_lines(m: ModelRecord) -> list[str]:
    """The bfloat16 agreement (or why float32 ran instead), right after the model's first line."""
    notes = [f"{m.model}: {n}" for n in m.notes if n.startswith(("ran in float32", "bfloat16 as insisted"))]
    agree = [f"{m.model}: {m.precision_agreement.summary}"] if m.precision_agreement else []
    return notes + agree


def model_lines(m: ModelRecord) -> list[str]:
    unknown = sum(s.unknown for s in m.skipped)
    other = len(m.skipped) - unknown
    skipped = (f"; the {unknown} it does not know were not traced (`trace_unknown: true` traces them as a control)"
               if unknown else "") + (f"; {other} skipped as untraceable (listed in `skipped`)" if other else "")
    head = f"{m.model}: knows {m.n_known}/{len(m.facts) + unknown} checked facts{skipped}."
    if m.n_known == 0:
        return [head + " There is no stored fact to locate; its traces are not averaged.", *_precision_lines(m),
                *_approx_lines(m)]
    known = [f for f in m.facts if f.correct]
    pc, pk = (sum(getattr(f, a) for f in known) / len(known) for a in ("p_clean", "p_corrupted"))
    total = (f" Mean p(target) over the {len(known)} known fact{'s' if len(known) != 1 else ''}: {pc:.3f} clean vs "
             f"{pk:.3f} corrupted (total effect {pc - pk:+.3f}).")
    if pc - pk < MIN_EFFECT:
        total += " The corruption barely matters: the answer is not recalled from the subject here."
    lines = [head + total, *_precision_lines(m), _peak_line(m), _mlp_vs_attn(m), _resid_line(m),
             _subject_token_line(m), _context_line(m), *_caution_lines(m)]
    return [line for line in lines if line]


def _depth(layer: int, n: int) -> str:
    return f"layer {layer}/{n} (depth {layer / n:.2f})"


def same_model(models: Sequence[ModelRecord]) -> bool:
    """Two or more entries of one model (same weights fingerprint and depth): runs that differ in settings."""
    return (len(models) > 1 and bool(models[0].fingerprint) and len({m.fingerprint for m in models}) == 1
            and len({m.n_layers for m in models}) == 1)


def peak_band(m: ModelRecord, component: str, position: str) -> tuple[int, int] | None:
    """The layers a model's peak at (component, category) may sit at ([first, last]): its half-max range and
    every layer whose effect's 95% band reaches the peak's lower bound, widened to the layers those windows
    restore (a window's effect cannot be placed more finely than the window)."""
    curve, r = site_curve(m, component, position), _find(m, component, position)
    if curve is None or r is None:
        return None
    mean, band = np.nan_to_num(curve[0], nan=-1e9), curve[1]
    top = int(mean.argmax())
    near = [x for x in range(len(mean)) if mean[x] + band[x] >= mean[top] - band[top]]
    first, last = min(near[0], r.first), max(near[-1], r.last)
    w = 1 if component == "resid" else m.window
    return max(0, first - w // 2), min(m.n_layers - 1, last + (w - 1) // 2)


def _interval(band: tuple[int, int], n: int, relative: bool) -> tuple[float, float]:
    """Layers [a, b] as a half-open interval: [a, b + 1) in layers, or [a / n, (b + 1) / n) in depth."""
    return (band[0] / n, (band[1] + 1) / n) if relative else (band[0], band[1] + 1)


def _band_text(band: tuple[int, int], n: int, relative: bool) -> str:
    lo, hi = _interval(band, n, relative)
    return f"depth {lo:.2f}-{hi:.2f}" if relative else _range(*band)


def _depth_verdict(sites: list[tuple[str, tuple[float, float], float]], relative: bool, same: bool) -> str:
    """Different depths only when the peak bands (:func:`peak_band`: half-max range, the layers within the
    peak's 95% band, the layers each window restores) exclude each other; two one-layer half-max ranges
    that do not overlap are no evidence by themselves."""
    peaks = [p for _, _, p in sites]
    if (max(peaks) - min(peaks) <= 0.1) if relative else len(set(peaks)) == 1:
        return " The peaks sit at about the same depth."
    apart = [(a, b) for i, (a, sa, _) in enumerate(sites) for b, sb, _ in sites[i + 1:]
             if sa[1] <= sb[0] or sb[1] <= sa[0]]
    if not apart:
        return (" The peak layers differ but their peak bands overlap: no evidence of different depths (a peak is "
                "placed only to within its half-max range, its 95% band and its window).")
    why = ("the settings move where restoring recovers the answer" if same
           else "the models route these facts differently")
    if len(apart) == len(sites) * (len(sites) - 1) // 2:
        return f" The peaks sit at different depths (their peak bands exclude each other): {why}."
    pairs = ", ".join(f"{a} vs {b}" for a, b in apart)
    return f" Different depths only for {pairs} (their peak bands exclude each other); the other pairs' bands overlap."


def cross_model(models: Sequence[ModelRecord]) -> str:
    """The cross-model paragraph: same kind and token category, by relative depth when depths differ."""
    knows = "; ".join(f"{m.model} knows {m.n_known}/{len(m.facts)}" for m in models)
    same = same_model(models)
    head = "Same model, different settings" if same else "Across models"
    ref = reference_site(list(models))
    if ref is None:
        return f"{head}: {knows}; no {'run' if same else 'model'} shows a restoration effect to compare."
    component, position = ref
    relative = len({m.n_layers for m in models}) > 1
    parts, sites = [], []
    for m in models:
        r = _find(m, component, position)
        if component not in m.aie:
            parts.append(f"{m.model} was not traced with {component} (no like-for-like comparison)")
            continue
        band = peak_band(m, component, position)
        if r is None or band is None:
            parts.append(f"{m.model} shows none")
            continue
        where = _depth(r.max_layer, m.n_layers) if relative else f"layer {r.max_layer}"
        parts.append(f"{m.model} peaks at {where}, {r.max_effect:.3f} +/- {r.band:.3f} (n={r.n}, half-max "
                     f"{_range(r.first, r.last)}; peak band {_band_text(band, m.n_layers, relative)})")
        sites.append((m.model, _interval(band, m.n_layers, relative),
                      r.max_layer / m.n_layers if relative else r.max_layer))
    align = ("; layers are compared by relative depth (layer / n_layers) because the models' depths differ"
             if relative else "")
    text = f"{head} ({knows}{align}): {component} at the {position}: " + "; ".join(parts) + "."
    if len(sites) >= 2:
        text += _depth_verdict(sites, relative, same)
    elif len(sites) == 1:
        text += (" Only one run shows this effect; the others' maps are flat here." if same else
                 " Only one model shows this effect; the others' maps are flat here.")
    return text


def interpret(models: Sequence[ModelRecord]) -> list[str]:
    lines = [line for m in models for line in model_lines(m)]
    if len(models) > 1:
        lines.append(cross_model(models))
    return lines


def _setup(request: TraceRequest, models: Sequence[ModelRecord]) -> str:
    c = request.corruption
    if c.kind == "swap":
        how = "subject swap"
    else:
        units = ", ".join(f"{m.noise_std:.3g}" for m in models if m.noise_std is not None)
        how = (f"noise {c.scale:g} x std ({units}; from {models[0].noise_std_from if models else '?'}), "
               f"{c.samples} draws")
    windows = ", ".join(sorted({str(m.window) for m in models}))
    mode = "ROME-compatible, " if request.rome_compat else ""
    reduced = " in bfloat16 (float32 on a recomputed sample)" if any(m.precision == "bfloat16" for m in models) else ""
    return f"{mode}{how}; mlp/attn window {windows}; {request.mode} patching{reduced}."


def summary_text(request: TraceRequest, models: Sequence[ModelRecord], fact_set: str, lines: list[str]) -> str:
    n = max((len(m.facts) + len(m.skipped) for m in models), default=0)
    head = f"Traced {n} facts ({fact_set}) on {', '.join(m.model for m in models)}: {_setup(request, models)}"
    text = head + "\n" + "\n".join(f"- {line}" for line in lines)
    if len(text) > SUMMARY_CHARS:
        text = text[: SUMMARY_CHARS - 60].rsplit("\n", 1)[0] + "\n- (more in `interpretation`)"
    return text


def hint(tool: str, request: dict[str, Any]) -> str:
    return f"`{tool}` with " + json.dumps({"request": request})


def next_hint(request: TraceRequest, models: Sequence[ModelRecord], run_id: str) -> str:
    m = next((x for x in models if x.n_known), models[0] if models else None)
    fact = next((i for i, f in enumerate(m.facts) if f.correct), 0) if m else 0
    parts = [f"Call {hint('plot', {'run_id': run_id, 'kind': 'heatmap', 'options': {'model': m.model if m else '', 'fact': fact}})}"
             " for one fact's layer x token map"]
    flagged = [x for x in models if x.readings.layer0_artifact]
    if flagged and (request.pack or request.dataset_run_id):
        source = {"pack": request.pack} if request.pack else {"dataset_run_id": request.dataset_run_id}
        rerun = {"models": [x.model for x in flagged], **source, "corruption": {"kind": "swap"}}
        if request.max_facts:
            rerun["max_facts"] = request.max_facts
        parts.append(f"check the layer-0 caution with {hint('trace', rerun)} (or \"window\": 1)")
    if len(models) == 1:
        parts.append(f"then {hint('compare', {'run_ids': [run_id, '<another trace run_id>']})} to contrast models")
    return "; ".join(parts) + "."


def results_of(request: TraceRequest, models: Sequence[ModelRecord], fact_set: str, lines: list[str],
               status: str = "complete") -> TraceResults:
    return TraceResults(status=status, fact_set=fact_set, mode=request.mode, components=list(request.components),
                        window=request.window, corruption=request.corruption.model_dump(), seed=request.seed,
                        rome_compat=request.rome_compat, noise_std_from=str(request.noise_std_from),
                        models={m.model: m for m in models}, interpretation=lines,
                        agreement=_agreement(models) if request.mode == "approx" and request.check_agreement else None)


def write_partial(request: TraceRequest, models: Sequence[ModelRecord], fact_set: str, run: Run) -> None:
    """Save what a cancelled or failed run finished (status 'partial'), readable by plot and compare."""
    run.write_json(RESULTS_FILE, results_of(request, models, fact_set, interpret(models) if models else [],
                                            "partial").model_dump(mode="json"))


def finish_run(request: TraceRequest, models: list[ModelRecord], fact_set: str, run: Run) -> TraceResult:
    lines = interpret(models)
    results = results_of(request, models, fact_set, lines)
    results_uri = run.write_json(RESULTS_FILE, results.model_dump(mode="json"))
    for m in models:
        tensors = {f"fact{i}.{k}.restored": torch.tensor(grid) for i, f in enumerate(m.facts)
                   for k, grid in f.restored.items()}
        if tensors:
            run.write_tensors(f"arrays/{slug(m.model)}.safetensors", tensors)
    figures = [run.write_figure(f"figures/{name}.png", fig) for name, fig in default_figures(results)]
    summary = summary_text(request, models, fact_set, lines)
    run.set_summary(summary.splitlines()[0])
    return TraceResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures,
                       next=next_hint(request, models, run.run_id), models=[model_trace(m) for m in models],
                       interpretation=lines, agreement=results.agreement, results=results_uri)


def _mean_of(rows: Sequence[dict], component: str, name: str) -> float | None:
    """The mean of one agreement figure over facts (NaN, i.e. a flat grid, and older records skipped)."""
    vals = [r[component][name] for r in rows if name in r[component] and r[component][name] == r[component][name]]
    return sum(vals) / len(vals) if vals else None


def _agreement(models: Sequence[ModelRecord]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in models:
        rows = [f.agreement for f in m.facts if f.agreement]
        per_kind = {}
        for k in rows[0] if rows else []:
            per_kind[k] = {f"mean_{name}": _mean_of(rows, k, name) for name in ("pearson_r", "spearman", "top10_overlap")}
            per_kind[k].update(max_abs_diff=max(r[k]["max_abs_diff"] for r in rows),
                               same_peak_fraction=sum(r[k]["same_peak"] for r in rows) / len(rows))
        out[m.model] = per_kind
    return out


def model_trace(m: ModelRecord) -> ModelTrace:
    """The agent-sized view of a model's record: ranges at the categories the reading uses (all are in
    trace_results.json)."""
    keep = {"last subject token", m.peak.position if m.peak else ""}
    readings = m.readings.model_copy(update={"ranges": [r for r in m.readings.ranges if r.position in keep]})
    return ModelTrace(model=m.model, lm_kind=m.lm_kind, n_layers=m.n_layers, n_facts=len(m.facts), n_known=m.n_known,
                      unknown_facts=m.unknown_facts, skipped=m.skipped, mean_p_clean=m.mean_p_clean,
                      mean_p_corrupted=m.mean_p_corrupted, mean_p_clean_known=m.mean_p_clean_known,
                      mean_p_corrupted_known=m.mean_p_corrupted_known, window=m.window, noise_std=m.noise_std, peak=m.peak,
                      readings=readings, notes=m.notes, precision_agreement=m.precision_agreement)
