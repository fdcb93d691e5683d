"""clamp_sweep: hold MLP neurons at fixed values while the model generates, and see which values
rescue prompts whose unclamped ("baseline") output collapses into loops.

The method (after the "Baseline Collapse Recovery" workflow):

1. Pick neurons: ``blocks.{L}.mlp.hook_post`` index ``i`` (the MLP hidden unit after the
   nonlinearity, i.e. the input of the down-projection), written ``"L:i"``; ``"*:i"`` means index
   ``i`` in every layer.
2. For every prompt and every sweep value ``v`` (plus the baseline, no clamp), generate
   ``max_new_tokens`` tokens with the neurons set to ``v`` at the chosen positions (see
   :mod:`neurotrace.lab.clamping.generation` for "all" vs "last" and how the batch is laid out).
3. Score each output with auditable text metrics (:mod:`neurotrace.lab.effects.collapse`) and flag it
   ``is_collapsed``, with its type (empty, loop, repetitive). A clamped row ``improves`` its baseline when the baseline collapsed and the
   clamped output does not.
4. Controls: ``controls`` random groups per neuron group, each with as many other neurons in the same
   layers (seeded), are swept over the same values. The verdict (:mod:`neurotrace.lab.clamping.verdict`)
   compares the group's best recovery with the controls' best recoveries.
5. Report per value: collapse rate, how many collapsed baselines it recovers (the improvement-rate
   curve), mean metrics, and the mean MLP activation vector of the clamped layers.

All (prompt, value) pairs run as rows of one batched, KV-cached generation, so a full grid costs
about as much as ``rows / batch_size`` single generations; finished rows stream to disk
(:mod:`neurotrace.lab.clamping.stream`), so memory does not grow with the grid (in float32; a bfloat16
sweep keeps its rows for the float32 recheck, then streams them).
"""



from collections.abc import Callable

import torch

from neurotrace.lab.clamping.precision import recheck, to_agreement
from neurotrace.lab.clamping.prompt_grid import resolve_prompts
from neurotrace.lab.clamping.report import write_outputs
from neurotrace.lab.clamping.schema import ClampSweepRequest, ClampSweepResult
from neurotrace.lab.clamping.stream import RowSink
from neurotrace.lab.clamping.sweep import Condition, build_conditions, run_rows, score_rows, tokenize_prompts
from neurotrace.lab.effects import Damage, NeutralSet, judge
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.runtime.ndif import check_execution
from neurotrace.lab.model.runtime.precision import check_backend, lease_pair, resolve
from neurotrace.lab.model.runtime.sampling import Greedy
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter

MAX_NEUTRAL_PROMPTS = 8     # prompts whose prefixes the damage check reads


def run_clamp_sweep(request: ClampSweepRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> ClampSweepResult:
    """Run the sweep and write its run directory (see the module docstring)."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    check_execution(request)
    check_backend(request.precision, request.backend, bool(request.remote))
    if request.precision == "bfloat16" and not isinstance(request.sampling, Greedy):
        raise InputError("precision", "bfloat16's float32 recheck compares greedy generations row by row; a "
                         "sampled row's draws depend on its batch", fix="use greedy sampling, or precision='float32'")
    precision, note = resolve(request.precision, request.insist_precision, request.device)
    prompts = resolve_prompts(request.prompts, request.prompt_file, lab.inputs)
    ref = ModelRef(model=request.model, device=request.device, dtype=request.dtype, backend=request.backend)
    with lease_pair(lab.cache, ref, precision) as (work, lm):
        if lm.lm_kind != "causal":
            raise InputError("model", f"{request.model!r} is a masked LM; clamp_sweep needs generation",
                             fix="use a causal LM such as 'gpt2' or 'fact-gpt2'")
        conds = build_conditions(request, lm)
        prompt_ids = tokenize_prompts(lm, prompts, request)
        with lab.store.open_run("clamp_sweep", request, seed=request.seed) as run:
            run.add_model(request.model, lm.fingerprint, lm.provenance)
            sink = RowSink(run, prompts, prompt_ids, conds, lm, request.thresholds)   # rows stream to disk
            try:
                agreed = None
                if precision == "bfloat16":   # the recheck picks among every row: they are kept, then streamed
                    out = run_rows(work, request, conds, prompt_ids, reporter)
                    score_rows(out.rows, lm, request.thresholds)
                    reporter.step(0, 1, "float32 recheck of the deciding rows and a seeded sample")
                    agreed = to_agreement(recheck(lm, request, conds, prompt_ids, out, reporter), out.rows, prompts,
                                          conds, request.seed)
                    sink.add(out.rows)
                else:
                    out = run_rows(work, request, conds, prompt_ids, reporter, sink=sink.add)
                return write_outputs(run, request, prompts, prompt_ids, conds, out, sink, lm,
                                     damage_check(lm, prompt_ids, conds), precision=(precision, note, agreed))
            finally:
                sink.close()


def damage_check(lm: LoadedModel, prompt_ids: list[list[int]], conds: list[Condition]) -> Callable[[str, float], Damage]:
    """(group label, value) -> the shared damage check of that clamp at every position of neutral text."""
    neutral: list[NeutralSet] = []
    groups = {c.label: c.neurons for c in conds if c.value is not None and c.control_of is None}

    def hook(idx: tuple[int, ...], value: float) -> Callable[..., torch.Tensor]:
        def fn(act: torch.Tensor, site: str) -> torch.Tensor:
            out = act.clone()
            out[..., list(idx)] = value
            return out
        return fn

    def check(label: str, value: float) -> Damage:
        if not neutral:
            neutral.append(NeutralSet(lm, prompt_ids[:MAX_NEUTRAL_PROMPTS]))
        hooks = {site_name("mlp_post", layer): hook(idx, value) for layer, idx in groups[label].items()}
        return judge(neutral[0].measure(lambda ids: hooked(lm.model, lm.adapter, hooks)))
    return check
