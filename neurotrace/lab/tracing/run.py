"""Orchestration of a trace run: per model, per fact, grids -> aggregates -> results, figures, summary."""

import math
from typing import Any

import torch

from neurotrace.lab.errors import InputError
from neurotrace.lab.facts import Fact, load_factset, load_pack
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.loading import LoadedModel, ModelRef
from neurotrace.lab.model.tokens import token_texts
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.runs import Run
from neurotrace.lab.seeding import make_generator
from neurotrace.lab.tracing.grid import (
    Corrupted,
    approx_grid,
    corrupted_probs,
    exact_grid,
    head_grid,
    layer_curve,
)
from neurotrace.lab.tracing.prepare import (
    PreparedFact,
    clean_states,
    prepare_fact,
    subject_noise_std,
    target_probs,
)
from neurotrace.lab.tracing.report import finish_run
from neurotrace.lab.tracing.schema import TraceRequest, TraceResult

CATEGORIES = ["before subject", "first subject token", "middle subject tokens", "last subject token",
              "first subsequent token", "further tokens", "scored token", "after scored token"]


def categories(prep: PreparedFact) -> list[int]:
    """ROME-style token category of each position (indices into CATEGORIES)."""
    s, e, last = prep.subject[0], prep.subject[1], prep.predict_pos
    out = []
    for p in range(len(prep.ids)):
        if p == last:
            out.append(6)
        elif p > last:
            out.append(7)
        elif p < s:
            out.append(0)
        elif p == e - 1:
            out.append(3)
        elif p == s:
            out.append(1)
        elif p < e:
            out.append(2)
        else:
            out.append(4 if p == e else 5)
    return out


def aligned(grid: torch.Tensor, cats: list[int]) -> torch.Tensor:
    """(n_layers, pos) -> (n_layers, len(CATEGORIES)) mean per category, nan where empty."""
    out = torch.full((grid.shape[0], len(CATEGORIES)), float("nan"))
    idx = torch.tensor(cats)
    for c in range(len(CATEGORIES)):
        mask = idx == c
        if mask.any():
            out[:, c] = grid[:, mask].mean(1)
    return out


def _corrupted(request: TraceRequest, lm: LoadedModel, prep: PreparedFact, std: float, index: int) -> Corrupted:
    if request.corruption.kind == "swap":
        if prep.swap_ids is None:
            raise InputError(f"facts[{index}].corrupt_subject", "subject swap needs a corrupt subject of the same "
                             f"token length ({'; '.join(prep.notes) or 'none given'})",
                             fix="give corrupt_subject, or use corruption {'kind': 'noise'}")
        return Corrupted(prep.swap_ids, None, prep.subject)
    g = make_generator(request.seed * 1_000_003 + index)
    n_subj = prep.subject[1] - prep.subject[0]
    noise = torch.randn((request.corruption.samples, n_subj, lm.d_model), generator=g) * (request.corruption.scale * std)
    return Corrupted(prep.ids, noise, prep.subject)


def _trivial(kind: str, pos: int, predict_pos: int) -> bool:
    """Restoring the residual stream at (or after) the scored position restores the output itself, so
    those cells are shown in the maps but never reported as the place a fact is stored."""
    return kind == "resid" and pos >= predict_pos


def trace_fact(request: TraceRequest, lm: LoadedModel, prep: PreparedFact, corr: Corrupted, reporter: Reporter,
               progress: tuple[int, int]) -> dict[str, Any]:
    """Every number for one fact on one model (JSON-ready lists)."""
    _, hidden = clean_states(lm, prep.ids, [])
    clean_logits = lm.adapter.logits_at(lm.model, hidden[prep.predict_pos]).float()
    p_clean, top = float(torch.softmax(clean_logits, -1)[prep.target_id]), int(clean_logits.argmax())
    p_corr = float(corrupted_probs(lm, prep, corr).mean())
    out: dict[str, Any] = {
        "fact_id": prep.fact.id, "prompt": prep.fact.prompt(), "subject": prep.fact.clean_subject,
        "target": prep.fact.target, "target_id": prep.target_id, "tokens": prep.tokens,
        "subject_range": list(prep.subject), "predict_pos": prep.predict_pos, "categories": categories(prep),
        "p_clean": p_clean, "p_corrupted": p_corr, "clean_minus_corrupt": p_clean - p_corr,
        "correct": top == prep.target_id, "top_token": token_texts(lm.tokenizer, [top])[0],
        "held_out": prep.fact.held_out, "notes": list(prep.notes),
    }
    kinds, window = list(request.kinds), window_for(request, lm.n_layers)
    if request.mode == "approx":
        approx = approx_grid(lm, prep, corr, kinds, window)
        out["approx_indirect"] = {k: v.tolist() for k, v in approx.items()}
        grids = {k: (v + p_corr) for k, v in approx.items()}
        if request.check_agreement:
            exact = exact_grid(lm, prep, corr, kinds, window, reporter, progress=progress)
            out["agreement"] = agreement({k: v - p_corr for k, v in exact.items()}, approx)
            grids = exact
    else:
        grids = exact_grid(lm, prep, corr, kinds, window, reporter, progress=progress)
    out["restored"] = {k: v.tolist() for k, v in grids.items()}
    out["indirect"] = {k: (v - p_corr).tolist() for k, v in grids.items()}
    cells = [(float(v[layer][p]), k, layer, p) for k, v in out["indirect"].items()
             for layer in range(len(v)) for p in range(len(v[layer])) if not _trivial(k, p, prep.predict_pos)]
    eff, kind, layer, pos = max(cells)
    out["peak"] = {"kind": kind, "layer": layer, "pos": pos, "token": prep.tokens[pos], "effect": eff}
    out["curves"] = _curves(lm, prep, grids, p_clean)
    if request.heads:
        out["heads"] = head_grid(lm, prep, corr).tolist()
    return out


def _curves(lm: LoadedModel, prep: PreparedFact, grids: dict, p_clean: float) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    if "resid" in grids:
        curves["mask_patch"] = grids["resid"][:, prep.predict_pos].tolist()
        curves["subject_patch"] = grids["resid"][:, prep.subject[1] - 1].tolist()
    if prep.context_ids is not None:
        p_ctx = float(target_probs(lm, prep.context_ids[None], prep.predict_pos, prep.target_id)[0])
        curves["context_patch"] = layer_curve(lm, prep, prep.context_ids, prep.context_pos).tolist()
        curves["context_p_corrupted"] = p_ctx
        curves["context_clean_minus_corrupt"] = p_clean - p_ctx
    return curves


def agreement(exact: dict[str, torch.Tensor], approx: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Pearson r, max |diff| and whether the peak cell agrees, per kind."""
    out = {}
    for k in exact:
        a, b = exact[k].flatten(), approx[k].flatten()
        r = float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
        out[k] = {"pearson_r": r, "max_abs_diff": float((a - b).abs().max()),
                  "same_peak": int(a.argmax()) == int(b.argmax())}
    return out


def trace_model(request: TraceRequest, ref: ModelRef, facts: list[Fact], *, lab: Lab, reporter: Reporter,
                run: Run) -> dict[str, Any]:
    with lab.cache.lease(ref) as lm:
        run.add_model(ref.model, lm.fingerprint)
        preps = [prepare_fact(lm, f, i) for i, f in enumerate(facts)]
        std = subject_noise_std(lm, preps)
        rows_per_fact = [len(request.kinds) * lm.n_layers * len(p.ids) * (
            1 if request.corruption.kind == "swap" else request.corruption.samples) for p in preps]
        total, done = sum(rows_per_fact), 0
        per_fact = []
        for i, prep in enumerate(preps):
            corr = _corrupted(request, lm, prep, std, i)
            per_fact.append(trace_fact(request, lm, prep, corr, reporter, (done, total)))
            done += rows_per_fact[i]
            reporter.step(done, total, f"{ref.model}: fact {i + 1}/{len(preps)}")
        return summarize_model(request, ref.model, lm, per_fact, std)


def _nanmean(ts: list[torch.Tensor]) -> torch.Tensor:
    stack = torch.stack(ts)
    return torch.nanmean(stack, dim=0)


def summarize_model(request: TraceRequest, name: str, lm: LoadedModel, per_fact: list[dict], std: float
                    ) -> dict[str, Any]:
    known = [f for f in per_fact if f["correct"]]
    aie: dict[str, list] = {}
    for k in request.kinds:
        rows = [aligned(torch.tensor(f["indirect"][k]), f["categories"]) for f in known]
        aie[k] = _nanmean(rows).tolist() if rows else []
    peak = None
    cells = [(v, k, layer, c) for k, grid in aie.items() for layer, row in enumerate(grid)
             for c, v in enumerate(row) if not math.isnan(v) and not (k == "resid" and c >= 6)]
    if cells:
        v, k, layer, c = max(cells)
        peak = {"kind": k, "layer": layer, "position": CATEGORIES[c], "effect": v}
    curves = {}
    for key in ("mask_patch", "context_patch", "subject_patch"):
        rows = [torch.tensor(f["curves"][key]) for f in known if key in f["curves"]]
        if rows:
            curves[key] = torch.stack(rows).mean(0).tolist()
    notes = sorted({n for f in per_fact for n in f["notes"]})
    return {"model": name, "kind": lm.kind, "family": lm.adapter.family, "n_layers": lm.n_layers,
            "fingerprint": lm.fingerprint, "noise_std": std, "facts": per_fact, "aie": aie,
            "categories": CATEGORIES, "peak": peak, "curves_mean": curves,
            "n_known": len(known), "unknown_facts": [f["fact_id"] or f["subject"] for f in per_fact if not f["correct"]],
            "mean_p_clean": sum(f["p_clean"] for f in per_fact) / len(per_fact),
            "mean_p_corrupted": sum(f["p_corrupted"] for f in per_fact) / len(per_fact), "notes": notes}


def trace_models(request: TraceRequest, refs: list[ModelRef], facts: list[Fact], fact_set: str, *, lab: Lab,
                 run: Run, reporter: Reporter) -> TraceResult:
    models = [trace_model(request, ref, facts, lab=lab, reporter=reporter, run=run) for ref in refs]
    return finish_run(request, models, fact_set, run)


def window_for(request: TraceRequest, n_layers: int) -> int:
    """The mlp/attn window: as requested, else ROME's 10-of-48 scaled to ``n_layers``."""
    if request.window is not None:
        if request.window > n_layers:
            raise InputError("window", f"window {request.window} exceeds the model's {n_layers} layers",
                             fix=f"use 1..{n_layers} or omit it")
        return request.window
    return max(1, round(n_layers * 10 / 48))


def resolve_facts(request: TraceRequest, lab: Lab) -> tuple[list[Fact], str]:
    """The facts to trace and a name for the fact set."""
    if request.facts:
        facts, name = list(request.facts), "inline facts"
    elif request.pack:
        facts, name = list(load_pack(request.pack).facts), f"{request.pack} pack"
    else:
        fs = load_factset(lab, request.dataset_run_id)
        facts, name = list(fs.facts), f"{fs.domain} dataset"
    if request.max_facts:
        facts = facts[: request.max_facts]
    return facts, name


def run_trace(request: TraceRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> TraceResult:
    """Causal-trace (or mask/context-patch) each fact on each model; write results and figures."""
    facts, fact_set = resolve_facts(request, lab)
    refs = [ModelRef(model=m, device=request.device) for m in request.models]
    with lab.store.open_run("trace", request, seed=request.seed) as run:
        if request.dataset_run_id:
            run.add_input(request.dataset_run_id)
        return trace_models(request, refs, facts, fact_set, lab=lab, run=run, reporter=reporter)
