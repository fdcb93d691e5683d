"""The sweep itself: conditions (neuron x value), batched generation rows, and their collapse scores."""

import math
import re
import time
from dataclasses import dataclass, field

import torch

from neurotrace.lab.clamping.collapse import CollapseThresholds, collapse_reasons, text_metrics
from neurotrace.lab.clamping.generation import ClampRows, Sampler, generate, left_pad
from neurotrace.lab.clamping.prompt_grid import PromptItem
from neurotrace.lab.clamping.schema import ClampSweepRequest, Greedy
from neurotrace.lab.errors import InputError
from neurotrace.lab.model.loading import LoadedModel
from neurotrace.lab.progress import Reporter
from neurotrace.lab.seeding import make_generator

PAPER_SWEEP: tuple[float | None, ...] = (-100, -50, -25, -10, -5, -3, 0, None, 3, 5, 10, 25, 50, 100)
NEURON_RE = re.compile(r"^\s*(\*|\d+)\s*:\s*(\d+)\s*$")




@dataclass(frozen=True)
class Condition:
    """One sweep setting: a neuron group clamped to a value (value None = baseline)."""

    label: str
    value: float | None
    neurons: dict[int, tuple[int, ...]] = field(default_factory=dict)


@dataclass
class Row:
    prompt: int
    cond: int
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


def parse_neuron(ref: str, n_layers: int, d_mlp: int) -> dict[int, tuple[int, ...]]:
    """'11:373' -> {11: (373,)}; '*:373' -> {L: (373,) for every layer}; InputError('neurons') if bad."""
    m = NEURON_RE.match(ref)
    if not m:
        raise InputError("neurons", f"{ref!r} is not 'layer:index'", fix="write e.g. '11:373' or '*:373'")
    index = int(m.group(2))
    if index >= d_mlp:
        raise InputError("neurons", f"index {index} in {ref!r} is out of range: the MLP is {d_mlp} wide",
                         fix=f"use an index in 0..{d_mlp - 1}")
    if m.group(1) == "*":
        return {layer: (index,) for layer in range(n_layers)}
    layer = int(m.group(1))
    if layer >= n_layers:
        raise InputError("neurons", f"layer {layer} in {ref!r} is out of range ({n_layers} layers)",
                         fix=f"use a layer in 0..{n_layers - 1} or '*' for all")
    return {layer: (index,)}


def _merge(parts: list[dict[int, tuple[int, ...]]]) -> dict[int, tuple[int, ...]]:
    out: dict[int, set[int]] = {}
    for part in parts:
        for layer, idx in part.items():
            out.setdefault(layer, set()).update(idx)
    return {layer: tuple(sorted(idx)) for layer, idx in sorted(out.items())}


def sweep_values(values: list[float | None] | None) -> list[float]:
    """The non-baseline values, sorted and deduplicated (the baseline is always added separately)."""
    raw = list(PAPER_SWEEP) if values is None else values
    bad = [v for v in raw if v is not None and not math.isfinite(v)]
    if bad:
        raise InputError("values", f"clamp values must be finite, got {bad}", fix="remove nan/inf values")
    clamps = sorted({float(v) for v in raw if v is not None})
    if not clamps:
        raise InputError("values", "the sweep is empty (no clamp value besides the baseline)",
                         fix="give at least one number, e.g. [0, 10], or omit `values` for the paper's sweep")
    return clamps


def build_conditions(request: ClampSweepRequest, lm: LoadedModel) -> list[Condition]:
    """Baseline first, then every (group, value)."""
    refs = [(ref.strip().replace(" ", ""), parse_neuron(ref, lm.n_layers, lm.d_mlp)) for ref in request.neurons]
    if request.neuron_mode == "joint":
        groups = [("+".join(label for label, _ in refs), _merge([n for _, n in refs]))]
    else:
        groups = list(dict((label, n) for label, n in refs).items())
    values = sweep_values(request.values)
    return [Condition("none", None)] + [Condition(label, v, n) for label, n in groups for v in values]


def _tokenize(lm: LoadedModel, prompts: list[PromptItem], max_new_tokens: int) -> list[list[int]]:
    limit = getattr(lm.config, "n_positions", None) or getattr(lm.config, "max_position_embeddings", None)
    out = []
    for i, item in enumerate(prompts):
        ids = lm.tokenizer(item.prompt).input_ids
        if not ids:
            raise InputError("prompts", f"prompt {i} ({item.prompt!r}) tokenizes to nothing", fix="give it text")
        if limit and len(ids) + max_new_tokens > limit:
            raise InputError("max_new_tokens", f"prompt {i} has {len(ids)} tokens; with {max_new_tokens} new "
                             f"tokens it exceeds the model's {limit} positions",
                             fix=f"use max_new_tokens <= {limit - len(ids)} or a shorter prompt")
        out.append(ids)
    return out


def _clamp_rows(batch: list[Row], conds: list[Condition], d_mlp: int) -> ClampRows:
    masks: dict[int, torch.Tensor] = {}
    values = torch.zeros(len(batch))
    for r, row in enumerate(batch):
        cond = conds[row.cond]
        if cond.value is None:
            continue
        values[r] = cond.value
        for layer, idx in cond.neurons.items():
            masks.setdefault(layer, torch.zeros(len(batch), d_mlp, dtype=torch.bool))[r, list(idx)] = True
    return ClampRows(masks=masks, values=values)


@dataclass
class SweepOutput:
    rows: list[Row]
    act_sum: dict[int, torch.Tensor]      # layer -> float64 (conditions, d_mlp)
    act_count: torch.Tensor               # (conditions,)
    tokens_generated: int
    seconds: float


def run_rows(lm: LoadedModel, request: ClampSweepRequest, conds: list[Condition], prompt_ids: list[list[int]],
             reporter: Reporter) -> SweepOutput:
    """Generate every (prompt, condition) row in batches; rows sorted by prompt length."""
    order = sorted(range(len(prompt_ids)), key=lambda i: (len(prompt_ids[i]), i))
    rows = [Row(p, c) for p in order for c in range(len(conds))]
    record = sorted({layer for c in conds for layer in c.neurons})
    act_sum = {layer: torch.zeros(len(conds), lm.d_mlp, dtype=torch.float64) for layer in record}
    act_count = torch.zeros(len(conds), dtype=torch.long)
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    eos = tok.eos_token_id if request.stop_at_eos else None
    s = request.sampling
    sampler = Sampler() if isinstance(s, Greedy) else Sampler(s.temperature, s.top_k,
                                                              make_generator(request.seed, lm.device))
    start, n_tokens, bs = time.perf_counter(), 0, request.batch_size
    for b0 in range(0, len(rows), bs):
        reporter.step(b0, len(rows), f"generating rows {b0 + 1}-{min(b0 + bs, len(rows))} of {len(rows)}")
        batch = rows[b0:b0 + bs]
        ids, mask = left_pad([prompt_ids[r.prompt] for r in batch], pad)
        gen = generate(lm.model, lm.adapter, ids, mask, max_new_tokens=request.max_new_tokens,
                       clamps=_clamp_rows(batch, conds, lm.d_mlp), position=request.position, sampler=sampler,
                       eos_token_id=eos, pad_token_id=pad, record_layers=record,
                       on_step=lambda _step: reporter.check())
        cond_idx = torch.tensor([r.cond for r in batch])
        for layer in record:
            act_sum[layer].index_add_(0, cond_idx, gen.act_sum[layer])
        act_count.index_add_(0, cond_idx, gen.act_count)
        for r, row in enumerate(batch):
            row.tokens = gen.tokens[r, : int(gen.lengths[r])].tolist()
            n_tokens += len(row.tokens)
    reporter.step(len(rows), len(rows), "scoring outputs")
    return SweepOutput(rows, act_sum, act_count, n_tokens, time.perf_counter() - start)


def score_rows(rows: list[Row], lm: LoadedModel, thresholds: CollapseThresholds) -> None:
    """Decode each output and fill its metrics and collapse reasons (EOS excluded from the metrics)."""
    eos = lm.tokenizer.eos_token_id
    for row in rows:
        content = row.tokens[:-1] if row.tokens and row.tokens[-1] == eos else row.tokens
        row.text = lm.tokenizer.decode(content, skip_special_tokens=True)
        row.metrics = text_metrics(content, row.text)
        row.reasons = collapse_reasons(row.metrics, thresholds)
