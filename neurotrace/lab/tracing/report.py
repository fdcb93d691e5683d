"""Writing a trace run: trace_results.json, arrays, figures, interpretation and the summary."""

from typing import Any

import torch

from neurotrace.lab.runs import Run
from neurotrace.lab.tracing.figures import default_figures, slug
from neurotrace.lab.tracing.schema import ModelTrace, PeakSite, TraceRequest, TraceResult

RESULTS_FILE = "trace_results.json"


def interpret(models: list[dict[str, Any]]) -> list[str]:
    """The points an expert would make: peak layer, magnitude, context vs mask (or MLP vs attention),
    the sign of clean-minus-corrupt, and the cross-model reading."""
    lines = []
    for m in models:
        name, peak = m["model"], m["peak"]
        if m["n_known"] == 0:
            lines.append(f"{name}: knows none of the {len(m['facts'])} facts (clean top-1 never the target), so "
                         "there is no stored fact to locate; its traces are not averaged.")
            continue
        frac = m["n_layers"] - 1 or 1
        depth = "early" if peak["layer"] < frac / 3 else "middle" if peak["layer"] < 2 * frac / 3 else "late"
        lines.append(f"{name}: peak indirect effect at the {peak['kind']} of the {peak['position']} in layer "
                     f"{peak['layer']} of {m['n_layers']} ({depth} layers), magnitude {peak['effect']:.3f} "
                     f"(mean p(target) over the {m['n_known']} known facts {_mean(m, 'p_clean'):.3f} clean vs "
                     f"{_mean(m, 'p_corrupted'):.3f} corrupted).")
        aie = m["aie"]
        if "mlp" in aie and "attn" in aie and aie["mlp"] and aie["attn"]:
            mlp, attn = _max(aie["mlp"]), _max(aie["attn"])
            lead = "MLP" if mlp >= attn else "attention"
            lines.append(f"{name}: {lead} restorations carry more of the effect (max MLP {mlp:.3f} vs attention "
                         f"{attn:.3f}).")
        curves = m["curves_mean"]
        if "mask_patch" in curves and "context_patch" in curves:
            lines.append(_context_vs_mask(m))
        cmc = [f["clean_minus_corrupt"] for f in m["facts"] if f["correct"]]
        sign = sum(cmc) / len(cmc)
        lines.append(f"{name}: clean minus corrupt is {sign:+.3f} on average over known facts: "
                     + ("corrupting the subject destroys the answer, so it is recalled from the subject."
                        if sign > 0.05 else "the corruption barely matters, so the answer is not recalled from the "
                        "subject (or is guessed from the template)."))
    if len(models) > 1:
        lines.append(cross_model(models))
    return lines


def cross_model(models: list[dict[str, Any]]) -> str:
    parts = []
    for m in models:
        if m["peak"]:
            parts.append(f"{m['model']} knows {m['n_known']}/{len(m['facts'])} with its peak at layer "
                         f"{m['peak']['layer']} ({m['peak']['kind']}, {m['peak']['effect']:.3f})")
        else:
            parts.append(f"{m['model']} knows {m['n_known']}/{len(m['facts'])}")
    known = [m for m in models if m["peak"]]
    tail = ""
    if len(known) >= 2:
        layers = {m["peak"]["layer"] for m in known}
        tail = (" The peaks sit at the same layer: the models store these facts in the same place." if len(layers) == 1
                else " The peaks sit at different layers: the models route these facts differently.")
    elif len(known) == 1:
        tail = f" Only {known[0]['model']} stores these facts; compare its trace with the others' flat maps."
    return "Across models: " + "; ".join(parts) + "." + tail


def _context_vs_mask(m: dict[str, Any]) -> str:
    """Mask patching: from which layer restoring the scored position recovers half the effect;
    context patching: until which layer restoring the context word still does."""
    known = [f for f in m["facts"] if f["correct"]]
    p_clean = sum(f["p_clean"] for f in known) / len(known)
    p_corr = sum(f["p_corrupted"] for f in known) / len(known)
    p_ctx = [f["curves"]["context_p_corrupted"] for f in known if "context_p_corrupted" in f["curves"]]
    mp, cp = m["curves_mean"]["mask_patch"], m["curves_mean"]["context_patch"]
    half_m = p_corr + 0.5 * (p_clean - p_corr)
    from_layer = next((i for i, v in enumerate(mp) if v >= half_m), None)
    half_c = (sum(p_ctx) / len(p_ctx) + p_clean) / 2 if p_ctx else None
    until = max((i for i, v in enumerate(cp) if half_c is not None and v >= half_c), default=None)
    return (f"{m['model']}: the answer is readable at the scored position from layer {from_layer} (mask patching "
            f"peaks at layer {_argmax(mp)}, {max(mp):.3f}); the context word matters until layer {until} (context "
            "patching " + ("falls off after it" if until is not None else "never recovers half the effect") + ").")


def _mean(m: dict[str, Any], key: str) -> float:
    known = [f[key] for f in m["facts"] if f["correct"]]
    return sum(known) / len(known)


def _max(grid: list[list[float]]) -> float:
    return max((v for row in grid for v in row if v == v), default=float("nan"))


def _argmax(curve: list[float]) -> int:
    return int(torch.tensor(curve).argmax())


def summary_text(models: list[dict[str, Any]], fact_set: str, interpretation: list[str]) -> str:
    head = [f"Traced {len(models[0]['facts'])} facts ({fact_set}) on {', '.join(m['model'] for m in models)}."]
    for m in models:
        if m["unknown_facts"]:
            head.append(f"{m['model']} does not know {len(m['unknown_facts'])} of them (flagged, not averaged).")
    return " ".join(head) + "\n" + "\n".join(f"- {line}" for line in interpretation)


def finish_run(request: TraceRequest, models: list[dict[str, Any]], fact_set: str, run: Run) -> TraceResult:
    interpretation = interpret(models)
    agreement = _agreement(models) if request.mode == "approx" and request.check_agreement else None
    results = {"fact_set": fact_set, "mode": request.mode, "kinds": list(request.kinds), "window": request.window or "auto",
               "corruption": request.corruption.model_dump(), "seed": request.seed,
               "models": {m["model"]: m for m in models}, "interpretation": interpretation, "agreement": agreement}
    results_uri = run.write_json(RESULTS_FILE, results)
    for m in models:
        tensors = {}
        for i, f in enumerate(m["facts"]):
            for k, grid in f["restored"].items():
                tensors[f"fact{i}.{k}.restored"] = torch.tensor(grid)
        run.write_tensors(f"arrays/{slug(m['model'])}.safetensors", tensors)
    figures = [run.write_figure(f"figures/{name}.png", fig) for name, fig in default_figures(results)]
    summary = summary_text(models, fact_set, interpretation)
    run.set_summary(summary.splitlines()[0])
    nxt = ("Call plot with this run_id and kind='heatmap' (options: model, fact) to see one fact's layer x "
           "position map" + ("; call compare with this and another trace run to contrast models." if len(models) == 1
                             else "."))
    return TraceResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures, next=nxt,
                       models=[model_trace(m) for m in models], interpretation=interpretation, agreement=agreement,
                       results=results_uri)


def _agreement(models: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in models:
        rows = [f["agreement"] for f in m["facts"] if "agreement" in f]
        per_kind = {}
        for k in rows[0] if rows else []:
            rs = [r[k]["pearson_r"] for r in rows if r[k]["pearson_r"] == r[k]["pearson_r"]]
            per_kind[k] = {"mean_pearson_r": sum(rs) / len(rs) if rs else None,
                           "max_abs_diff": max(r[k]["max_abs_diff"] for r in rows),
                           "same_peak_fraction": sum(r[k]["same_peak"] for r in rows) / len(rows)}
        out[m["model"]] = per_kind
    return out


def model_trace(m: dict[str, Any]) -> ModelTrace:
    def argmax(curve: list[float] | None) -> int | None:
        return None if not curve else int(torch.tensor(curve).argmax())

    return ModelTrace(model=m["model"], kind=m["kind"], n_layers=m["n_layers"], n_facts=len(m["facts"]),
                      n_known=m["n_known"], unknown_facts=m["unknown_facts"], mean_p_clean=m["mean_p_clean"],
                      mean_p_corrupted=m["mean_p_corrupted"], peak=PeakSite(**m["peak"]) if m["peak"] else None,
                      peak_layer_mask_patch=argmax(m["curves_mean"].get("mask_patch")),
                      peak_layer_context_patch=argmax(m["curves_mean"].get("context_patch")), notes=m["notes"])
