"""Orchestration of a trace run: check every fact on every model, then per model, per fact, the grids
-> typed records -> averages and readings -> results, figures, summary. A cancelled or failed run
still writes the facts it finished (``status: partial`` in trace_results.json)."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from neurotrace.lab.errors import InputError
from neurotrace.lab.facts import Fact, list_packs, load_factset, load_pack
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.tokens import token_texts
from neurotrace.lab.model.runtime.ndif import check_execution, jobs_json, remote_lease, remote_session
from neurotrace.lab.model.runtime.nnsight_backend import traced
from neurotrace.lab.model.runtime.precision import PrecisionName, check_backend, lease_at, lease_pair, resolve
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.runs import Run
from neurotrace.lab.tracing.forwards import target_probs
from neurotrace.lab.tracing.grids import approx_check
from neurotrace.lab.tracing.grids.grid import (
    Corrupted,
    approx_grid,
    corrupted_probs,
    exact_grid,
    head_grid,
    layer_curve,
)
from neurotrace.lab.tracing.grids.nnsight_grid import approx_grid_nnsight, exact_grid_nnsight
from neurotrace.lab.tracing.noise import embedding_std, fact_seed, noise_draw, subjects_alone_std
from neurotrace.lab.tracing.precision import Recomputed, fact_peak, measure, recompute_fact
from neurotrace.lab.tracing.prepare import Checked, check_facts
from neurotrace.lab.tracing.readings import ModelInfo, categories, summarize_model
from neurotrace.lab.tracing.report import finish_run, write_partial
from neurotrace.lab.tracing.schema import (
    ROME_WINDOW,
    FactCurves,
    FactRecord,
    ModelRecord,
    SkippedFact,
    TraceRequest,
    TraceResult,
)


def window_for(request: TraceRequest, n_layers: int) -> int:
    """The mlp/attn window: ROME's 10 under rome_compat, as requested, else ROME's 10-of-48 scaled."""
    if request.rome_compat:
        return ROME_WINDOW
    if request.window is not None:
        if request.window > n_layers:
            raise InputError("window", f"window {request.window} exceeds the model's {n_layers} layers",
                             fix=f"use 1..{n_layers} or omit it")
        return request.window
    return max(1, round(n_layers * 10 / 48))


def _source_facts(lab: Lab, name: str, field: str) -> list[Fact]:
    if name in list_packs():
        return list(load_pack(name).facts)
    try:
        return list(load_factset(lab, name).facts)
    except InputError as err:
        raise InputError(field, f"{name!r} is neither a pack nor a generate_facts run ({err.message})",
                         fix=f"use one of {list_packs()} or a dataset run id") from err


def noise_reference(request: TraceRequest, lab: Lab) -> tuple[list[Fact], str]:
    """The facts whose subjects set the noise std for noise_std_from='dataset', and their name."""
    if request.noise_dataset:
        return _source_facts(lab, request.noise_dataset, "noise_dataset"), request.noise_dataset
    if request.pack:
        return list(load_pack(request.pack).facts), f"{request.pack} pack"
    if request.dataset_run_id:
        return list(load_factset(lab, request.dataset_run_id).facts), request.dataset_run_id
    return list(request.facts), "the request's inline facts"


def noise_unit(request: TraceRequest, lm: LoadedModel, lab: Lab) -> tuple[float | None, str]:
    """The model's noise unit (std) and where it came from."""
    if request.corruption.kind == "swap":
        return None, "none (subject swap)"
    source = "dataset" if request.rome_compat else request.noise_std_from
    if isinstance(source, float):
        return source, "given"
    if source == "embeddings":
        return embedding_std(lm), "embeddings (whole vocabulary)"
    facts, name = noise_reference(request, lab)
    return subjects_alone_std(lm, [f.clean_subject for f in facts]), f"dataset ({name}, subjects alone)"


def corrupted_input(request: TraceRequest, lm: LoadedModel, checked: Checked, unit: float | None
                    ) -> tuple[Corrupted, int | None]:
    prep = checked.prep
    if request.corruption.kind == "swap":
        return Corrupted(prep.swap_ids, None, prep.subject), None
    rows, seed = noise_draw(request.corruption.samples, prep, lm.d_model, unit, request.corruption.scale,
                            seed=request.seed, rome=request.rome_compat)
    return Corrupted(prep.ids, rows, prep.subject), seed


def _grids(request: TraceRequest, lm: LoadedModel, checked: Checked, corr: Corrupted, p_corr: float, window: int,
           reporter: Reporter, progress: tuple[int, int], anchor: LoadedModel | None = None) -> tuple[dict, dict]:
    """The restored grids to report, and the approx-only extras (estimate, agreement, cell check).
    ``anchor``: the float32 model of a bfloat16 run (see :func:`exact_grid`)."""
    prep, components, extra = checked.prep, list(request.components), {}
    nnsight = traced(lm)  # the same grids, every forward (and backward) in nnsight's trace
    exact_grid_ = exact_grid_nnsight if nnsight else exact_grid
    if request.mode == "exact" and nnsight:      # float32 only: bfloat16 refuses the nnsight backend
        return exact_grid_nnsight(lm, prep, corr, components, window, reporter, progress=progress), extra
    if request.mode == "exact":
        return exact_grid(lm, prep, corr, components, window, reporter, progress=progress, anchor=anchor), extra
    approx = (approx_grid_nnsight if nnsight else approx_grid)(lm, prep, corr, components, window)
    extra["approx_indirect"] = {k: v.tolist() for k, v in approx.items()}
    if request.check_agreement:
        exact = exact_grid_(lm, prep, corr, components, window, reporter, progress=progress)
        extra["agreement"] = agreement({k: v - p_corr for k, v in exact.items()}, approx)
        return exact, extra
    extra["approx_check"] = approx_check.check(lm, prep, corr, approx, p_corr, window,
                                               fact_seed(request.seed, prep.fact))
    return {k: v + p_corr for k, v in approx.items()}, extra


def trace_fact(request: TraceRequest, lm: LoadedModel, checked: Checked, unit: float | None, window: int,
               reporter: Reporter, progress: tuple[int, int], anchor: LoadedModel | None = None) -> FactRecord:
    """Every number for one fact on one model. In bfloat16, ``anchor`` (the float32 model) computes the
    corrupted p(target) and the exact grid's once-per-fact clean and corrupted runs."""
    prep = checked.prep
    corr, seed = corrupted_input(request, lm, checked, unit)
    p_corr = float(corrupted_probs(anchor or lm, prep, corr).mean())
    grids, extra = _grids(request, lm, checked, corr, p_corr, window, reporter, progress, anchor)
    indirect = {k: (v - p_corr) for k, v in grids.items()}
    heads = head_grid(lm, prep, corr).tolist() if request.heads else None
    return FactRecord(
        fact_id=prep.fact.id, prompt=prep.prompt or prep.fact.prompt(),
        subject=prep.fact.clean_subject, target=prep.fact.target, target_id=prep.target_id, tokens=prep.tokens,
        subject_range=list(prep.subject), predict_pos=prep.predict_pos, categories=categories(prep),
        p_clean=checked.p_clean, p_corrupted=p_corr, clean_minus_corrupt=checked.p_clean - p_corr,
        correct=checked.correct, top_token=token_texts(lm.tokenizer, [checked.top_id])[0],
        held_out=prep.fact.held_out, notes=list(prep.notes), noise_seed=seed,
        restored={k: v.tolist() for k, v in grids.items()}, indirect={k: v.tolist() for k, v in indirect.items()},
        peak=fact_peak(indirect, prep.predict_pos, prep.tokens),
        curves=_curves(lm, checked, grids), heads=heads, **extra)


def _curves(lm: LoadedModel, checked: Checked, grids: dict) -> FactCurves:
    prep, out = checked.prep, {}
    if "resid" in grids:
        out["scored_patch"] = grids["resid"][:, prep.predict_pos].tolist()
        out["subject_patch"] = grids["resid"][:, prep.subject[1] - 1].tolist()
    if prep.context_ids is not None:
        p_ctx = float(target_probs(lm, prep.context_ids[None], prep.predict_pos, prep.target_id)[0])
        out["context_patch"] = layer_curve(lm, prep, prep.context_ids, prep.context_pos).tolist()
        out["context_p_corrupted"] = p_ctx
        out["context_clean_minus_corrupt"] = checked.p_clean - p_ctx
    return FactCurves(**out)


TOP_K = 10  # agreement's top-k overlap


def agreement(exact: dict[str, torch.Tensor], approx: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Per component, over the full exact grid: Pearson and rank (Spearman) correlation, the share of
    exact's top-``TOP_K`` cells that approx also ranks top-``TOP_K``, max |diff| and whether the peaks agree."""
    out = {}
    for k in exact:
        a, b = exact[k].flatten().double(), approx[k].flatten().double()
        varied = bool(a.std() > 0 and b.std() > 0)
        r = float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if varied else float("nan")
        ranks = torch.stack([a.argsort().argsort(), b.argsort().argsort()]).double()
        rho = float(torch.corrcoef(ranks)[0, 1]) if varied else float("nan")
        top = min(TOP_K, len(a))
        overlap = len(set(a.topk(top).indices.tolist()) & set(b.topk(top).indices.tolist())) / top
        out[k] = {"pearson_r": r, "spearman": rho, f"top{TOP_K}_overlap": overlap,
                  "max_abs_diff": float((a - b).abs().max()), "same_peak": int(a.argmax()) == int(b.argmax())}
    return out


class Plan:
    """One model's checked facts and noise unit, made before any compute; and what is done so far."""

    def __init__(self, ref: ModelRef, checked: list[Checked], skipped: list[SkippedFact], info: ModelInfo,
                 precision: PrecisionName = "float32", note: str | None = None) -> None:
        self.ref, self.checked, self.skipped, self.info = ref, checked, skipped, info
        self.precision, self.note = precision, note      # what runs (bfloat16 falls back where it is slow)
        self.done: list[FactRecord] = []


def plan_model(request: TraceRequest, ref: ModelRef, facts: Sequence[Fact], lab: Lab, reporter: Reporter,
               run: Run) -> Plan:
    with _lease(request, lab, ref) as lm:
        run.add_model(ref.model, lm.fingerprint, lm.provenance)
        checked, skipped = check_facts(request, lm, facts, reporter)
        window = window_for(request, lm.n_layers)
        unit, source = noise_unit(request, lm, lab)
        info = ModelInfo(ref.model, lm.lm_kind, lm.adapter.family, lm.n_layers, lm.n_heads, lm.fingerprint, window,
                         unit, source)
        precision, note = resolve(request.precision, request.insist_precision, lm.device)
    return Plan(ref, checked, skipped, info, precision, note)


def _cost(request: TraceRequest, plan: Plan, checked: Checked) -> int:
    samples = 1 if request.corruption.kind == "swap" else request.corruption.samples
    return len(request.components) * plan.info.n_layers * samples * len(checked.prep.ids)


def run_plan(request: TraceRequest, plan: Plan, lab: Lab, reporter: Reporter, progress: list[int]) -> ModelRecord:
    """Trace one model's checked facts; ``progress`` = [done, total] over the whole run (kept monotone).
    In bfloat16, then recompute each fact's peaks and a seeded sample of cells in float32 (the agreement)."""
    with _lease_pair(request, lab, plan.ref, plan.precision) as (lm, lm32):
        for i, checked in enumerate(plan.checked):
            plan.done.append(trace_fact(request, lm, checked, plan.info.noise_std, plan.info.window, reporter,
                                        (progress[0], progress[1]), anchor=None if lm is lm32 else lm32))
            progress[0] += _cost(request, plan, checked)
            reporter.step(progress[0], progress[1], f"{plan.ref.model}: fact {i + 1}/{len(plan.checked)}")
    record = summarize_model(request, plan.info, plan.done, plan.skipped)
    if plan.note:
        record.notes.append(plan.note)
    if plan.precision == "float32":
        return record
    redone: list[Recomputed] = []
    with lab.cache.lease(plan.ref) as lm32:
        for i, (checked, fact) in enumerate(zip(plan.checked, plan.done, strict=True)):
            corr, _ = corrupted_input(request, lm32, checked, plan.info.noise_std)
            redone.append(recompute_fact(request, lm32, checked, fact, corr, plan.info.window))
            reporter.step(progress[0], progress[1], f"{plan.ref.model}: float32 check {i + 1}/{len(plan.checked)}")
    record.precision = "bfloat16"
    record.precision_agreement = measure(request, plan.info, record, redone, plan.skipped)
    return record


def trace_models(request: TraceRequest, refs: list[ModelRef], facts: list[Fact], fact_set: str, *, lab: Lab,
                 run: Run, reporter: Reporter) -> TraceResult:
    plans = [plan_model(request, ref, facts, lab, reporter, run) for ref in refs]
    progress = [0, max(1, sum(_cost(request, p, c) for p in plans for c in p.checked))]
    models: list[ModelRecord] = []
    try:
        for plan in plans:
            models.append(run_plan(request, plan, lab, reporter, progress))
    except BaseException:
        partial = models + [summarize_model(request, p.info, p.done, p.skipped) for p in plans[len(models):]
                            if p.done]
        write_partial(request, partial, fact_set, run)
        raise
    return finish_run(request, models, fact_set, run)


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
    """Causal-trace (and context-patch) each fact on each model; write results and figures."""
    check_backend(request.precision, request.backend, request.remote)
    ndif = check_remote_trace(request)  # the server's NDIF configuration, before anything is read
    lab.check(request)  # bounds and the whole-job estimate, before any work
    facts, fact_set = resolve_facts(request, lab)
    refs = [ModelRef(model=m, device=request.device, backend=request.backend) for m in request.models]
    with lab.store.open_run("trace", request, seed=request.seed) as run:
        if request.dataset_run_id:
            run.add_input(request.dataset_run_id)
        if ndif is None:
            return trace_models(request, refs, facts, fact_set, lab=lab, run=run, reporter=reporter)
        with remote_session(ndif, reporter) as session:  # every trace of the run is one NDIF job
            try:
                return trace_models(request, refs, facts, fact_set, lab=lab, run=run, reporter=reporter)
            finally:
                run.write_text("remote_jobs.json", jobs_json(session))


def check_remote_trace(request: TraceRequest) -> Any:
    """The NDIF configuration of a remote trace (None: local), refusing what the weights-free client
    would have to compute itself."""
    ndif = check_execution(request)
    if ndif is not None and request.heads:
        raise InputError("heads", "head patching is not run on NDIF yet", fix="set heads=false for a remote trace")
    if ndif is not None and request.corruption.kind == "noise" and not isinstance(request.noise_std_from, float):
        raise InputError("noise_std_from", "a remote trace has no local weights to measure the noise unit on",
                         fix="give the unit as a number (e.g. 0.02, a local trace's noise_std), or corrupt by swap")
    return ndif


def _lease(request: TraceRequest, lab: Lab, ref: ModelRef, precision: PrecisionName = "float32") -> Any:
    """The model for ``ref`` at ``precision``: from the cache, or (remote) a client without weights."""
    return remote_lease(ref, lab.settings.trust_remote_code) if request.remote else lease_at(lab.cache, ref, precision)


@contextmanager
def _lease_pair(request: TraceRequest, lab: Lab, ref: ModelRef, precision: PrecisionName) -> Iterator[tuple[Any, Any]]:
    """(the model to run, its float32 model): :func:`lease_pair`, or the remote client twice."""
    if request.remote:
        with _lease(request, lab, ref, precision) as lm:
            yield lm, lm
        return
    with lease_pair(lab.cache, ref, precision) as pair:
        yield pair
