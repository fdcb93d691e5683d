"""clamp_sweep's cost model: the whole grid (prompts x settings x tokens), a prompt file's prompts counted."""

from typing import Any

from neurotrace.lab.clamping.prompt_grid import read_prompt_file
from neurotrace.lab.jobs import (
    BYTES,
    Estimate,
    dims_of,
    forward_bytes,
    positions,
    prompt_texts,
    weight_bytes,
)
from neurotrace.lab.model.runtime.precision import bytes_per_value

ROW_KEPT_BYTES = 2048       # one clamp_sweep generation kept until the report: its Python row, text, metrics
TOKEN_KEPT_BYTES = 48       # ... and per generated token (a Python int in a list, its text, its table cell)


def clamp_prompts(request: Any, lab: Any) -> list[str]:
    """clamp_sweep's prompts, a prompt file's included: the file is read and parsed here, before the job (a
    bad file is refused now, and its prompts count in the estimate instead of as one)."""
    texts = prompt_texts(request.prompts)
    if request.prompt_file:
        texts += [item.prompt for item in read_prompt_file(request.prompt_file, getattr(lab, "inputs", None))]
    return texts


def clamp_sweep_estimate(request: Any, lab: Any) -> Estimate:
    """The whole grid: prompts x settings (baseline + groups x values x (1 + controls)) generations of
    max_new_tokens each; memory: one batch's forward and KV cache plus every kept generation. In bfloat16:
    2-byte activations and KV cache, the bfloat16 copy's weights, and the float32 recheck's rows (at most
    every deciding row plus the sample, :func:`neurotrace.lab.clamping.precision.recheck_rows_bound`) run
    in float32 batches."""
    d = dims_of(lab, request.model)
    texts = clamp_prompts(request, lab)
    groups = 1 if request.neuron_mode == "joint" else len(set(request.neurons))
    values = len({float(v) for v in (request.values or [1.0] * 13) if v is not None}) or 1   # PAPER_SWEEP: 13
    settings = 1 + groups * values * (1 + request.controls)
    gens = max(1, len(texts)) * settings
    tokens = max(1, request.max_new_tokens)
    pos = positions(d, texts, tokens + (64 if request.chat_template else 0))
    batch = min(gens, request.batch_size)
    vb = bytes_per_value(request.precision)
    kv = batch * pos * d.n_layers * 2 * d.d_model * vb
    kept = gens * (ROW_KEPT_BYTES + tokens * TOKEN_KEPT_BYTES) + settings * d.n_layers * d.d_mlp * 8
    first = ("prompt_file",) if request.prompt_file else ("prompts",)
    fields = (*first, "values", "controls", "neurons", "max_new_tokens", "batch_size")
    if vb == BYTES:
        return Estimate(gens * tokens, forward_bytes(d, batch, pos) + kv + kept, fields)
    from neurotrace.lab.clamping.precision import recheck_rows_bound  # noqa: PLC0415 (the recheck imports the sweep)

    again = recheck_rows_bound(max(1, len(texts)), groups, request.controls, gens)
    b32 = min(again, request.batch_size)
    peak = max(forward_bytes(d, batch, pos, value_bytes=vb) + kv,
               forward_bytes(d, b32, pos) + b32 * pos * d.n_layers * 2 * d.d_model * BYTES)
    return Estimate((gens + again) * tokens, peak + kept + weight_bytes(d, vb), (*fields, "precision"))


