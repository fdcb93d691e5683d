"""Batched generation on a KV cache, with a different MLP-neuron clamp on every batch row.

A clamp sweep asks the same question many times: "what does the model write if neuron (L, i) is
held at value v?", for every prompt and every v. Calling ``model.generate`` once per (prompt, value)
leaves the CPU or GPU mostly idle on batch-1 matrix-vector products. Here every (prompt, value) pair
is one *row* of a batch, and all rows advance one token per forward pass:

* **Left padding.** Prompts of different lengths are right-aligned; padded slots get
  ``attention_mask = 0`` and the real tokens get position ids ``0..n-1`` as if unpadded
  (``position_ids = cumsum(mask) - 1``), so a row sees exactly what it would see alone. The newest
  token of every row is then always the last column.
* **KV cache.** The prompt is run once ("prefill"); each later step feeds only the newest token and
  reuses the cached keys and values (passed as ``cache=``, the argument of transformers >= 5.24), so a
  step costs one position per row.
* **Shared prefill** (``last`` mode): the clamp touches only the final prompt token, so every row with
  the same prompt (one per sweep value) shares one forward over the prompt minus its last token; the
  cache is gathered per row and only the last prompt token runs per row, with its clamp.
* **Per-row clamps.** A forward pre-hook on the MLP down-projection (site ``blocks.{L}.mlp.hook_post``,
  the post-nonlinearity hidden vector, ``d_mlp`` wide) replaces the chosen neurons with the row's value
  by ``torch.where``; rows that clamp nothing (the baseline) pass through bit for bit.

Where the clamp applies (``position``):

* ``"all"``: every real position: all prompt tokens in the prefill, and each generated token when
  it is fed back.
* ``"last"``: only the newest position at each forward: the prompt's final token in the prefill,
  then the single fed-back token at every step. Because the cache keeps each position's keys and
  values as they were computed, this is the same as clamping the final prompt token and every
  generated token, but not the earlier prompt tokens.

Exactness: padded slots get zero attention weight, so left padding and batching change no value except
through the floating-point summation order of batched matrix products (and the chunked unembedding).
Greedy outputs are token-identical to one ``model.generate`` call per row in the tests (tiny GPT-2,
Llama, the shipped fact-gpt2) and in ``bench/clamp_sweep.py`` (GPT-2-small shape); only a near-tie
between the two best logits (relative gap ~1e-6) could flip a token.

Generation matches ``model.generate`` semantics: the prefill predicts the first new token, each step
feeds the previous one; with ``eos_token_id`` set, a row that emits EOS is finished and gets
``pad_token_id`` afterwards. Greedy picks the argmax; sampling uses temperature and top-k with an
explicit ``torch.Generator`` (deterministic for a seed and the same batch layout).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Float64, Int
from torch import Tensor, nn
from transformers import GenerationConfig

from neurotrace.lab.model.access.adapters import ArchAdapter, site_name
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.runtime.precision import ExactTopHead
from neurotrace.lab.model.weights.loading import placement_device

Position = Literal["all", "last"]
HEAD_CHUNK = 4096  # vocabulary rows per unembedding matmul
# observe(layer, step, before, after): activations at blocks.{layer}.mlp.hook_post (batch, pos, d_mlp);
# step 0 is the prefill, step s >= 1 the s-th fed-back token.
Observer = Callable[[int, int, Tensor, Tensor], None]


@dataclass
class ClampRows:
    """Which neurons each batch row clamps, and to what value."""

    masks: dict[int, Bool[Tensor, "row d_mlp"]]   # layer -> the neurons this row clamps in that layer
    values: Float[Tensor, " row"]                 # the row's clamp value (unused where a row's mask is empty)


@dataclass
class Sampler:
    """How the next token is picked: greedy when ``temperature`` is None."""

    temperature: float | None = None
    top_k: int | None = None
    generator: torch.Generator | None = None

    def choose(self, logits: Float[Tensor, "row vocab"]) -> Int[Tensor, " row"]:
        if self.temperature is None:
            return logits.argmax(-1)
        scaled = logits.float() / self.temperature                      # (rows, vocab)
        if self.top_k is not None and self.top_k < scaled.shape[-1]:
            kth = scaled.topk(self.top_k, dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1)


@dataclass
class Generated:
    tokens: Int[Tensor, "row new"]      # (rows, max_new_tokens); pad after a row finished
    lengths: Int[Tensor, " row"]        # generated tokens per row, EOS included
    act_sum: dict[int, Float64[Tensor, "row d_mlp"]] = field(default_factory=dict)   # layer -> sums
    act_count: Int[Tensor, " row"] | None = None   # positions summed into act_sum
    forward_positions: int = 0          # real (non-pad) positions run through the model


@dataclass
class _State:
    step: int = 0
    clamp_pos: Bool[Tensor, "fwd pos"] | None = None   # where clamps apply in this forward (its rows, positions)
    valid: Bool[Tensor, "fwd pos"] | None = None       # real positions (recorded into the means)
    sums: dict[int, Float64[Tensor, "row d_mlp"]] = field(default_factory=dict)
    expand: Int[Tensor, " row"] | None = None          # batch row -> forward row, while a shared prefix runs


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Int[Tensor, "row pos"], Int[Tensor, "row pos"]]:
    """Right-align token lists: (input_ids, attention_mask), both long (rows, max_len)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


def _hook(layer: int, clamps: ClampRows | None, state: _State, record: bool,
          observe: Observer | None) -> Callable[..., Tensor | None]:
    mask = None if clamps is None else clamps.masks.get(layer)

    def fn(act: Float[Tensor, "fwd pos d_mlp"], site: str) -> Float[Tensor, "fwd pos d_mlp"] | None:
        before = act
        if mask is not None and state.clamp_pos is not None:
            sel = state.clamp_pos.to(act.device)[:, :, None] & mask.to(act.device)[:, None, :]  # (rows, pos, d_mlp)
            value = clamps.values.to(act.device, act.dtype)[:, None, None]   # a device-mapped layer may sit elsewhere
            act = torch.where(sel, value, act)
        if record:
            summed = (act.double() * state.valid.to(act.device)[:, :, None]).sum(1).to(state.sums[layer].device)
            state.sums[layer] += summed if state.expand is None else summed[state.expand]  # (rows, d_mlp)
        if observe is not None:
            observe(layer, state.step, before, act)
        return act if mask is not None and state.clamp_pos is not None else None

    return fn


@torch.no_grad()
def generate(model: nn.Module, adapter: ArchAdapter, input_ids: Int[Tensor, "row pos"],
             attention_mask: Int[Tensor, "row pos"], *,
             max_new_tokens: int, clamps: ClampRows | None = None, position: Position = "all",
             sampler: Sampler | None = None, eos_token_id: int | None = None, pad_token_id: int = 0,
             record_layers: Sequence[int] = (), observe: Observer | None = None,
             on_step: Callable[[int], None] | None = None, should_stop: Callable[[], bool] | None = None,
             share_prefill: bool = True, forward: Callable[..., Any] | None = None) -> Generated:
    """Generate ``max_new_tokens`` for every row of a left-padded batch, clamping per row.

    ``should_stop()`` is polled after every step; when it returns True the batch ends there (the
    tokens so far are returned). ``share_prefill`` (``last`` mode) runs each distinct prompt prefix once.
    ``forward(base=..., **inputs)`` replaces the model's own call (nnsight's traced forward, which
    realises the clamp hooks; see :func:`neurotrace.lab.model.runtime.nnsight_backend.routed_forward`)."""
    sampler = sampler or Sampler()
    device = input_device(model)
    ids, mask = input_ids.to(device), attention_mask.to(device)
    if clamps is not None:
        clamps = ClampRows({k: m.to(device) for k, m in clamps.masks.items()}, clamps.values.to(device))
    rows, d_mlp = ids.shape[0], _d_mlp(model, adapter)
    state = _State(sums={layer: torch.zeros(rows, d_mlp, dtype=torch.float64, device=device)
                         for layer in record_layers})
    hooks = _hooks(model, adapter, clamps, state, record_layers, observe)
    head = plain_head(model, adapter)
    out_tokens = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    count = torch.zeros(rows, dtype=torch.long, device=device)
    with hooked(model, adapter, hooks):
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        real = mask.bool()
        if share_prefill and position == "last" and observe is None and _shareable(mask):
            logits, cache = _prefill_shared(model, head, ids, mask, position_ids, state, forward)
        else:
            state.valid = real
            state.clamp_pos = real if position == "all" else _last_only(real)
            logits, cache = _forward(model, head, forward, input_ids=ids, attention_mask=mask,
                                     position_ids=position_ids)
        count += real.sum(1)
        done = 0
        for step in range(max_new_tokens):
            token = sampler.choose(logits)
            token = torch.where(finished, torch.full_like(token, pad_token_id), token)
            out_tokens[:, step] = token
            done = step + 1
            alive = ~finished
            if eos_token_id is not None:
                finished = finished | (token == eos_token_id)
            if on_step is not None:
                on_step(step)
            stop = should_stop is not None and should_stop()
            if stop or step + 1 == max_new_tokens or bool(finished.all()):
                break
            mask = torch.cat([mask, torch.ones(rows, 1, dtype=mask.dtype, device=device)], dim=1)
            position_ids = position_ids[:, -1:] + 1
            state.step = step + 1
            state.valid = alive[:, None]          # the fed token is a real output token of this row
            state.clamp_pos = torch.ones(rows, 1, dtype=torch.bool, device=device)
            logits, cache = _forward(model, head, forward, input_ids=token[:, None], attention_mask=mask,
                                     position_ids=position_ids, cache=cache)
            count += alive.long()
    lengths = _lengths(out_tokens[:, :done], eos_token_id)
    return Generated(tokens=out_tokens.cpu(), lengths=lengths.cpu(),
                     act_sum={k: v.cpu() for k, v in state.sums.items()}, act_count=count.cpu(),
                     forward_positions=int(count.sum()))


def _shareable(mask: Int[Tensor, "row pos"]) -> bool:
    """Every row has at least two real tokens (a shared prefix of one or more, then its last token)."""
    return mask.shape[1] >= 2 and bool(mask[:, -2].all())


def _prefill_shared(model: nn.Module, head: nn.Linear | None, ids: Int[Tensor, "row pos"], mask: Int[Tensor, "row pos"],
                    position_ids: Int[Tensor, "row pos"], state: _State, forward: Callable[..., Any] | None = None
                    ) -> tuple[Float[Tensor, "row vocab"], Any]:
    """The ``last``-mode prefill with each distinct prompt prefix run once.

    In ``last`` mode the prefill clamps only the final prompt token, so the keys and values of the
    earlier positions do not depend on the row's clamp: rows with the same prefix (the same prompt under
    every sweep value) share one unclamped prefix forward, whose cache is then gathered per row; the
    final token runs per row with its clamp. Per row this is the same arithmetic as the full prefill."""
    prefix = torch.cat([ids[:, :-1], mask[:, :-1]], dim=1)                   # (rows, 2 * (width - 1))
    unique, inverse = torch.unique(prefix, dim=0, return_inverse=True)
    width = ids.shape[1] - 1
    u_ids, u_mask = unique[:, :width], unique[:, width:]
    state.valid, state.clamp_pos, state.expand = u_mask.bool(), None, inverse
    _, cache = _forward(model, head, forward, input_ids=u_ids, attention_mask=u_mask,
                        position_ids=(u_mask.cumsum(-1) - 1).clamp(min=0))
    cache.batch_select_indices(inverse)
    state.valid, state.expand = mask[:, -1:].bool(), None
    state.clamp_pos = torch.ones_like(state.valid)
    return _forward(model, head, forward, input_ids=ids[:, -1:], attention_mask=mask,
                    position_ids=position_ids[:, -1:], cache=cache)


def input_device(model: nn.Module) -> torch.device:
    """Where a model's inputs go: a device-mapped model's first placement, else its parameters' device."""
    placed = getattr(model, "hf_device_map", None)
    return placement_device(next(iter(placed.values()))) if placed else next(model.parameters()).device


def plain_head(model: nn.Module, adapter: ArchAdapter) -> nn.Linear | None:
    """The unembedding, if the model's logits are exactly ``head(final hidden state)``; else None."""
    head = adapter.module(model, adapter.unembed)
    cfg = model.config
    scaled = any(getattr(cfg, k, None) not in (None, 1, 1.0) for k in ("final_logit_softcapping", "logit_scale",
                                                                      "logits_scaling"))
    base = getattr(model, "base_model", model)
    offloaded = any(p.device.type == "meta" for p in head.parameters())   # device_map: weights come in a hook
    return head if isinstance(head, nn.Linear) and base is not model and not scaled and not offloaded else None


def _forward(model: nn.Module, head: nn.Linear | None, forward: Callable[..., Any] | None = None,
             **inputs: Any) -> tuple[Float[Tensor, "row vocab"], Any]:
    """One cached forward: (logits of the last position (rows, vocab), the KV cache).

    With a plain linear head, the base model runs alone and the head is applied to the last position
    in vocabulary chunks of ``HEAD_CHUNK`` rows (cache-friendlier on CPU than one huge matmul).
    ``forward(base=..., **inputs)`` runs the model instead of calling it (nnsight's traced forward).
    """
    if head is None:
        out = (forward or model)(**inputs, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1], out.cache
    out = (model.base_model(**inputs, use_cache=True) if forward is None
           else forward(base=True, **inputs, use_cache=True, logits_to_keep=1))
    w, b = head.weight, head.bias
    h = out.last_hidden_state[:, -1].to(w.device)                          # (rows, d_model)
    if isinstance(head, ExactTopHead):         # a bfloat16 copy's unembedding: float32 logits, the top exact
        return head(h), out.cache
    chunks = [torch.nn.functional.linear(h, w[i:i + HEAD_CHUNK], None if b is None else b[i:i + HEAD_CHUNK])
              for i in range(0, w.shape[0], HEAD_CHUNK)]
    return torch.cat(chunks, dim=-1), out.cache


def _hooks(model: nn.Module, adapter: ArchAdapter, clamps: ClampRows | None, state: _State,
           record_layers: Sequence[int], observe: Observer | None) -> dict[str, Callable[..., Tensor | None]]:
    """One hook per MLP layer that clamps, records or is observed."""
    layers = set(record_layers) | set(clamps.masks if clamps is not None else ())
    if observe is not None:
        layers |= set(range(adapter.n_layers(model)))
    return {site_name("mlp_post", layer): _hook(layer, clamps, state, layer in record_layers, observe)
            for layer in sorted(layers)}


def _last_only(real: Bool[Tensor, "row pos"]) -> Bool[Tensor, "row pos"]:
    pos = torch.zeros_like(real)
    pos[:, -1] = True
    return pos


def _lengths(tokens: Int[Tensor, "row new"], eos_token_id: int | None) -> Int[Tensor, " row"]:
    """Tokens per row up to and including the first EOS (all of them for rows without one)."""
    rows, n = tokens.shape
    full = torch.full((rows,), n, dtype=torch.long, device=tokens.device)
    if eos_token_id is None:
        return full
    is_eos = tokens == eos_token_id
    return torch.where(is_eos.any(1), is_eos.long().argmax(1) + 1, full)


def _d_mlp(model: nn.Module, adapter: ArchAdapter) -> int:
    down = adapter.module(model, adapter.mlp_down, 0)
    return int(down.in_features) if hasattr(down, "in_features") else int(down.weight.shape[0])


def reference_generate(model: nn.Module, adapter: ArchAdapter, prompt_ids: Sequence[int], *,
                       max_new_tokens: int, neurons: dict[int, Sequence[int]] | None = None,
                       value: float | None = None, position: Position = "all",
                       eos_token_id: int | None = None, pad_token_id: int = 0) -> list[int]:
    """The straightforward path: one ``model.generate`` call with a clamp hook (greedy only).

    Used by tests and the benchmark as the peer that batched :func:`generate` must match.
    """
    device = input_device(model)
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    hooks: dict[str, Any] = {}
    if neurons and value is not None:
        def make(idx: list[int]) -> Callable[..., Tensor]:
            def fn(act: Tensor, site: str) -> Tensor:
                act = act.clone()
                if position == "all" or act.shape[1] == 1:
                    act[:, :, idx] = value
                else:
                    act[:, -1, idx] = value
                return act
            return fn

        hooks = {site_name("mlp_post", layer): make(list(idx)) for layer, idx in neurons.items()}
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_token_id,
                              pad_token_id=pad_token_id)
    with hooked(model, adapter, hooks), torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    gen = out[0, ids.shape[1]:].tolist()
    if eos_token_id is not None and eos_token_id in gen:
        gen = gen[: gen.index(eos_token_id) + 1]
    return gen
