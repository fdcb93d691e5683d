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
about as much as ``rows / batch_size`` single generations.
"""



from neurotrace.lab.clamping.prompt_grid import resolve_prompts
from neurotrace.lab.clamping.report import write_outputs
from neurotrace.lab.clamping.schema import ClampSweepRequest, ClampSweepResult
from neurotrace.lab.clamping.sweep import build_conditions, run_rows, score_rows, tokenize_prompts
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.runtime.ndif import check_execution
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter


def run_clamp_sweep(request: ClampSweepRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> ClampSweepResult:
    """Run the sweep and write its run directory (see the module docstring)."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    check_execution(request)
    prompts = resolve_prompts(request.prompts, request.prompt_file, lab.inputs)
    ref = ModelRef(model=request.model, device=request.device, dtype=request.dtype, backend=request.backend)
    with lab.cache.lease(ref) as lm:
        if lm.lm_kind != "causal":
            raise InputError("model", f"{request.model!r} is a masked LM; clamp_sweep needs generation",
                             fix="use a causal LM such as 'gpt2' or 'fact-gpt2'")
        conds = build_conditions(request, lm)
        prompt_ids = tokenize_prompts(lm, prompts, request)
        with lab.store.open_run("clamp_sweep", request, seed=request.seed) as run:
            run.add_model(request.model, lm.fingerprint, lm.provenance)
            out = run_rows(lm, request, conds, prompt_ids, reporter)
            score_rows(out.rows, lm, request.thresholds)
            return write_outputs(run, request, prompts, prompt_ids, conds, out, lm)
