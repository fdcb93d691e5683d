"""The sweep itself: conditions (neuron x value), batched generation rows, and their collapse scores."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from neurotrace.lab.clamping.generation import ClampRows, Sampler, generate, left_pad
from neurotrace.lab.clamping.prompt_grid import PromptItem
from neurotrace.lab.clamping.schema import ClampSweepRequest
from neurotrace.lab.effects import CollapseThresholds, collapse_reasons, text_metrics
from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.neurons import merge_neurons, parse_neuron
from neurotrace.lab.model.runtime.nnsight_backend import routed_forward
from neurotrace.lab.model.runtime.sampling import Greedy
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter
from neurotrace.lab.seeding import make_generator

__all__ = ["PAPER_SWEEP", "Condition", "Row", "SweepOutput", "build_conditions", "generation_ids", "parse_neuron", "run_rows",
           "score_rows", "sweep_values", "tokenize_prompts"]

PAPER_SWEEP: tuple[float | None, ...] = (-100, -50, -25, -10, -5, -3, 0, None, 3, 5, 10, 25, 50, 100)
# model_types whose TransformerLens 4.3 bridge sets default_prepend_bos = False (supported_architectures/*.py)
NO_BOS_MODEL_TYPES = frozenset({
    "gpt_neox", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi", "phimoe", "smollm3", "granite", "mpt",
    "bloom", "starcoder2", "glm", "glm4_moe", "exaone", "exaone4", "ernie4_5", "ernie4_5_moe",
    "recurrent_gemma", "seed_oss", "minimax_m2"})

@dataclass(frozen=True)
class Condition:
    """One sweep setting: a neuron group clamped to a value (value None = baseline)."""

    label: str
    value: float | None
    neurons: dict[int, tuple[int, ...]] = field(default_factory=dict)
    control_of: str | None = None      # the group label this random-neuron control stands beside


@dataclass
class Row:
    prompt: int
    cond: int
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


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


def _label(neurons: dict[int, tuple[int, ...]]) -> str:
    return "+".join(f"{layer}:{i}" for layer, idx in neurons.items() for i in idx)


def draw_controls(neurons: dict[int, tuple[int, ...]], d_mlp: int, n: int,
                  generator: torch.Generator) -> list[dict[int, tuple[int, ...]]]:
    """``n`` random groups with as many neurons per layer as ``neurons``, none of them its own."""
    out = []
    for _ in range(n):
        group = {}
        for layer, idx in neurons.items():
            others = torch.tensor([i for i in range(d_mlp) if i not in idx])
            pick = others[torch.randperm(len(others), generator=generator)[:len(idx)]]
            group[layer] = tuple(sorted(int(i) for i in pick))
        out.append(group)
    return out


def build_conditions(request: ClampSweepRequest, lm: LoadedModel) -> list[Condition]:
    """Baseline first, then every (group, value), then every (control of a group, value)."""
    refs = [(ref.strip().replace(" ", ""), parse_neuron(ref, lm.n_layers, lm.d_mlp)) for ref in request.neurons]
    if request.neuron_mode == "joint":
        groups = [("+".join(label for label, _ in refs), merge_neurons([n for _, n in refs]))]
    else:
        groups = list(dict((label, n) for label, n in refs).items())
    values = sweep_values(request.values)
    conds = [Condition("none", None)] + [Condition(label, v, n) for label, n in groups for v in values]
    if request.controls and any(sum(map(len, n.values())) >= lm.d_mlp for _, n in groups):
        raise InputError("controls", "a group clamps every neuron of its layer, so no control can be drawn",
                         fix="set controls=0 or clamp fewer neurons")
    g = make_generator(request.seed)
    for label, n in groups:
        for k, ctrl in enumerate(draw_controls(n, lm.d_mlp, request.controls, g)):
            conds += [Condition(f"control{k + 1}[{_label(ctrl)}]", v, ctrl, control_of=label) for v in values]
    return conds


def default_prepend_bos(lm: LoadedModel) -> bool:
    """TransformerLens's default for the family (see NO_BOS_MODEL_TYPES)."""
    return getattr(lm.config, "model_type", None) not in NO_BOS_MODEL_TYPES


def generation_ids(lm: LoadedModel, text: str, *, chat_template: bool = False, prepend_bos: bool | None = None,
                   model: str = "") -> list[int]:
    """The token ids a prompt is generated from: the chat template's (no BOS added), else the text's own
    tokens with BOS put first exactly once by TransformerLens's rule for the family (``prepend_bos`` None)
    or as asked. The one rule of clamp_sweep and find_neurons, so both generate the same baselines."""
    tok = lm.tokenizer
    if chat_template:
        if not getattr(tok, "chat_template", None):
            raise InputError("chat_template", f"the tokenizer of {model or lm.ref.model!r} has no chat template",
                             fix="set chat_template=false (a base model), or use the instruct model's own "
                                 "tokenizer")
        wrapped = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                          add_generation_prompt=True)
        return list(tok(wrapped, add_special_tokens=False).input_ids)
    ids = list(tok(text, add_special_tokens=False).input_ids)
    bos = tok.bos_token_id
    want = default_prepend_bos(lm) if prepend_bos is None else prepend_bos
    if want and bos is None and prepend_bos:
        raise InputError("prepend_bos", f"the tokenizer of {model or lm.ref.model!r} has no BOS token",
                         fix="set prepend_bos=false or leave it null")
    if want and bos is not None and ids[:1] != [bos]:
        ids = [bos] + ids
    return ids


def _prompt_ids(lm: LoadedModel, text: str, request: ClampSweepRequest) -> list[int]:
    return generation_ids(lm, text, chat_template=request.chat_template, prepend_bos=request.prepend_bos,
                          model=request.model)


def tokenize_prompts(lm: LoadedModel, prompts: list[PromptItem], request: ClampSweepRequest) -> list[list[int]]:
    """Token ids per prompt (chat template or BOS applied); InputError if one is empty or too long."""
    limit = lm.max_positions
    out = []
    for i, item in enumerate(prompts):
        ids = _prompt_ids(lm, item.prompt, request)
        if not ids:
            raise InputError("prompts", f"prompt {i} ({item.prompt!r}) tokenizes to nothing", fix="give it text")
        if limit and len(ids) + request.max_new_tokens > limit:
            raise InputError("max_new_tokens", f"prompt {i} has {len(ids)} tokens; with {request.max_new_tokens} "
                             f"new tokens it exceeds the model's {limit} positions",
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
    rows: list[Row]                       # empty when the rows went to a sink as they were generated
    act_sum: dict[int, torch.Tensor]      # layer -> float64 (conditions, d_mlp)
    act_count: torch.Tensor               # (conditions,)
    tokens_generated: int
    seconds: float
    n_rows: int = 0                       # rows generated


def run_rows(lm: LoadedModel, request: ClampSweepRequest, conds: list[Condition], prompt_ids: list[list[int]],
             reporter: Reporter, only: list[tuple[int, int]] | None = None,
             sink: Callable[[list[Row]], None] | None = None) -> SweepOutput:
    """Generate every (prompt, condition) row in batches, prompts sorted by length and each prompt's
    conditions together; ``only``: just these (prompt, condition) rows, in that order (the float32 recheck of
    a bfloat16 sweep). With ``sink`` each finished batch goes to it and no row is kept (rows are made per
    batch, never all at once: :mod:`neurotrace.lab.clamping.stream`)."""
    order = sorted(range(len(prompt_ids)), key=lambda i: (len(prompt_ids[i]), i))
    n_conds = len(conds)
    keys = [(p, c) for p, c in only] if only is not None else None
    n_rows = len(keys) if keys is not None else len(order) * n_conds
    rows: list[Row] = []
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
    for b0 in range(0, n_rows, bs):
        reporter.step(b0, n_rows, f"generating rows {b0 + 1}-{min(b0 + bs, n_rows)} of {n_rows}")
        span = range(b0, min(b0 + bs, n_rows))
        batch = [Row(*keys[i]) if keys is not None else Row(order[i // n_conds], i % n_conds) for i in span]
        ids, mask = left_pad([prompt_ids[r.prompt] for r in batch], pad)
        with routed_forward(lm) as forward:  # backend='nnsight': the clamp hooks run in nnsight's trace
            gen = generate(lm.model, lm.adapter, ids, mask, max_new_tokens=request.max_new_tokens,
                           clamps=_clamp_rows(batch, conds, lm.d_mlp), position=request.position, sampler=sampler,
                           eos_token_id=eos, pad_token_id=pad, record_layers=record,
                           on_step=lambda _step: reporter.check(), forward=forward)
        cond_idx = torch.tensor([r.cond for r in batch])
        for layer in record:
            act_sum[layer].index_add_(0, cond_idx, gen.act_sum[layer])
        act_count.index_add_(0, cond_idx, gen.act_count)
        for r, row in enumerate(batch):
            row.tokens = gen.tokens[r, : int(gen.lengths[r])].tolist()
            n_tokens += len(row.tokens)
        if sink is not None:
            sink(batch)
        else:
            rows += batch
    reporter.step(n_rows, n_rows, "scoring outputs")
    return SweepOutput(rows, act_sum, act_count, n_tokens, time.perf_counter() - start, n_rows)


def score_rows(rows: list[Row], lm: LoadedModel, thresholds: CollapseThresholds) -> None:
    """Decode each output and fill its metrics and collapse reasons (EOS excluded from the metrics)."""
    eos = lm.tokenizer.eos_token_id
    for row in rows:
        content = row.tokens[:-1] if row.tokens and row.tokens[-1] == eos else row.tokens
        row.text = lm.tokenizer.decode(content, skip_special_tokens=True)
        row.metrics = text_metrics(content, row.text)
        row.reasons = collapse_reasons(row.metrics, thresholds)
