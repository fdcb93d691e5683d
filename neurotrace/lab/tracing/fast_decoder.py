"""Exact causal tracing for every decoder family, computing only what a restoration can change.

The argument of :mod:`neurotrace.lab.tracing.fast_gpt2` holds for any causal decoder: restoring a site
at (layer L, position p) in the corrupted run leaves every layer below the first restored one, and
every position before p, exactly as in the corrupted run. So a patched row starts at its first
restored layer from the cached corrupted residual, runs only positions p.. through the remaining
layers, and attends to the cached corrupted keys and values of positions < p.

Here nothing of the attention is written out: each row batch runs the model's **own decoder-layer
modules** exactly as the model runs them when it continues a cached sequence.

* **Keys and values.** One corrupted forward fills a ``DynamicCache`` (every layer keeps every
  position: no sliding truncation) with each layer's post-norm, post-RoPE keys and values. A batch
  gets a fresh ``DynamicCache`` holding, per layer, its states' corrupted prefix ``[:, :, :p]``; the
  layer's attention appends the suffix keys/values and attends over both, as in generation.
* **Masks and positions.** One *probe* forward of the model's own base module on the suffix tokens
  (batch 1, over a cache prefilled with a ``p``-long prefix) captures the keyword arguments each
  decoder layer receives: the model's causal or sliding-window mask per layer type, its rotary
  position embeddings for positions ``p..T-1`` (partial rotary, local/global RoPE bases), position
  ids. Those arguments depend on positions and cache length only, never on the states, so they are
  replayed (broadcast over the batch) for every row batch beginning at ``p``. Grouped-query
  attention, q/k norms, parallel attention (GPT-NeoX) and Gemma's scaled embeddings (already inside
  the cached residuals) are the layers' own business.
* **Restorations** write the clean ``attn_out`` / ``mlp_out`` inside a layer through the ordinary site
  hooks; resid restorations are written into the state entering the next layer.
* **Shared states** (:mod:`neurotrace.lab.tracing.rowplan`): rows whose restorations so far agree run
  once per layer and fork where they differ. The LM head runs on the scored position only.

Masked LMs (bidirectional attention: every position sees the restored one) keep the batched full
forward. Results equal the full forward to float precision (tests on tiny models of every family).
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import DynamicCache

from neurotrace.lab.model.adapters import site_name
from neurotrace.lab.model.hooks import hooked
from neurotrace.lab.model.loading import LoadedModel
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.prepare import PreparedFact, clean_states, noise_hook
from neurotrace.lab.tracing.rowplan import (
    Level,
    Row,
    chunks,
    grid_sites,
    group_rows,
    initial_states,
    plan,
    put,
    target_prob,
)

LayerCall = tuple[tuple[Any, ...], dict[str, Any]]   # positional args after hidden_states, keyword args


def supports_fast_decoder(lm: LoadedModel) -> bool:
    """Causal decoders of the adapter table other than GPT-2 (which has its own fast path)."""
    return lm.kind == "causal" and lm.bridge is None and lm.adapter.family != "gpt2"


@torch.no_grad()
def corrupted_run(lm: LoadedModel, ids: Tensor, noise: Tensor | None,
                  subject: tuple[int, int]) -> tuple[list[Tensor], DynamicCache]:
    """The corrupted residual entering every layer (and, last, leaving the final one), each
    (samples, pos, D), and a cache holding every layer's keys/values (samples, kv_heads, pos, d_head)."""
    n = lm.n_layers
    sites = [site_name("resid_pre", layer) for layer in range(n)] + [site_name("resid_post", n - 1)]
    resid: dict[str, Tensor] = {}

    def save(act: Tensor, site: str) -> None:
        resid[site] = act.detach().clone()

    hooks: dict[str, list] = {s: [save] for s in sites}
    if noise is not None:
        hooks["hook_embed"] = [noise_hook(noise, subject)]
    samples = 1 if noise is None else noise.shape[0]
    cache = DynamicCache()
    body = lm.adapter.module(lm.model, lm.adapter.base)
    with hooked(lm.model, lm.adapter, hooks):
        body(input_ids=ids[None].expand(samples, -1).to(lm.device), cache=cache, use_cache=True)
    return [resid[s] for s in sites], cache


@torch.no_grad()
def layer_calls(lm: LoadedModel, ids: Tensor, kv: DynamicCache, p: int) -> tuple[list[LayerCall], DynamicCache]:
    """The arguments the model passes each decoder layer when it continues a ``p``-token cached prefix
    with tokens ``ids[p:]``, and the probe cache object they refer to (replaced on replay)."""
    probe = DynamicCache(ddp_cache_data=[(layer.keys[:1, :, :p], layer.values[:1, :, :p]) for layer in kv.layers])
    blocks = lm.adapter.module(lm.model, lm.adapter.blocks)
    calls: list[LayerCall] = []

    def grab(_module, args, kwargs):
        calls.append((tuple(args[1:]), dict(kwargs)))

    handles = [block.register_forward_pre_hook(grab, with_kwargs=True) for block in blocks]
    body = lm.adapter.module(lm.model, lm.adapter.base)
    try:
        body(input_ids=ids[None, p:].to(lm.device), cache=probe, use_cache=True)
    finally:
        for h in handles:
            h.remove()
    return calls, probe


def _restore_hook(spec) -> Callable[..., Tensor]:
    def restore(act: Tensor, site: str) -> Tensor:
        out = act.clone()
        put(out, spec)
        return out

    return restore


def _restore_hooks(start: int, levels: Sequence[Level]) -> dict[str, Callable[..., Tensor]]:
    """attn_out / mlp_out hooks writing each level's clean values into its layer."""
    hooks = {}
    for layer, level in zip(range(start, start + len(levels)), levels, strict=True):
        for kind, spec in level.restore.items():
            hooks[site_name(f"{kind}_out", layer)] = _restore_hook(spec)
    return hooks


@torch.no_grad()
def run_suffix(lm: LoadedModel, h: Tensor, start: int, p: int, kv: DynamicCache, calls: Sequence[LayerCall],
               probe: DynamicCache, levels: Sequence[Level]) -> Tensor:
    """Layers ``start..`` on the distinct suffix states ``h`` (states, S, D) beginning at position ``p``,
    over their samples' corrupted prefixes; returns the final hidden states (states, S, D)."""
    blocks = lm.adapter.module(lm.model, lm.adapter.blocks)
    cache = DynamicCache()
    with hooked(lm.model, lm.adapter, _restore_hooks(start, levels)):
        for layer, level in zip(range(start, len(blocks)), levels, strict=True):
            h = h[level.parent]
            cache.update(kv.layers[layer].keys[level.sample, :, :p], kv.layers[layer].values[level.sample, :, :p],
                         layer)                                              # (states, kv_heads, p, d_head)
            args, kwargs = calls[layer]
            swap = {k: cache if v is probe else v for k, v in kwargs.items()}
            out = blocks[layer](h, *(cache if a is probe else a for a in args), **swap)
            h = out[0] if isinstance(out, tuple) else out
    return h


def fast_decoder_grid(lm: LoadedModel, prep: PreparedFact, corr, kinds: Sequence[str], window: int,
                      reporter: Reporter, rows_per_batch: int = 512,
                      progress: tuple[int, int] = (0, 1)) -> dict[str, Tensor]:
    """Same numbers as :func:`neurotrace.lab.tracing.grid.exact_grid`, computing only what can change."""
    n_layers, samples = lm.n_layers, corr.samples
    clean, _ = clean_states(lm, prep.ids, grid_sites(kinds, n_layers))
    resid_pre, kv = corrupted_run(lm, corr.ids, corr.noise, corr.subject)
    n_cells, groups = group_rows(kinds, n_layers, len(prep.ids), samples, window)
    out = torch.empty(n_cells, samples)
    probes: dict[int, tuple[list[LayerCall], DynamicCache]] = {}
    done = 0
    for start, rows in groups.items():
        for chunk in chunks(rows, rows_per_batch):
            p0 = min(r.pos for r in chunk)
            if p0 not in probes:
                probes[p0] = layer_calls(lm, corr.ids, kv, p0)
            out[[r.cell for r in chunk], [r.sample for r in chunk]] = _chunk_probs(
                lm, prep, chunk, start, p0, resid_pre, kv, probes[p0], clean).cpu()
            done += len(chunk)
            reporter.step(progress[0] + done, progress[1], f"fact {prep.fact.id or prep.fact.clean_subject}")
    grid = out.mean(1).view(len(kinds), n_layers, len(prep.ids))
    return {k: grid[i] for i, k in enumerate(kinds)}


def _chunk_probs(lm: LoadedModel, prep: PreparedFact, chunk: Sequence[Row], start: int, p0: int,
                 resid_pre: Sequence[Tensor], kv: DynamicCache, probe: tuple[list[LayerCall], DynamicCache],
                 clean: dict[str, Tensor]) -> Tensor:
    initial, levels, final = plan(chunk, start, lm.n_layers, p0, clean)
    h = initial_states(chunk, initial, start, p0, resid_pre, clean)              # (states, S, D)
    h = run_suffix(lm, h, start, p0, kv, probe[0], probe[1], levels)
    norm = lm.adapter.module(lm.model, lm.adapter.final_norm)
    last = norm(h[:, prep.predict_pos - p0])                                     # (states, D)
    return target_prob(lambda x: lm.adapter.logits_at(lm.model, x), last, prep.target_id)[final]
