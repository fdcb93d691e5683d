"""Exact causal tracing for every decoder family, computing only what a restoration can change.

The argument of :mod:`neurotrace.lab.tracing.grids.fast_gpt2` holds for any causal decoder: restoring a site
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
* **Unchanged prefix.** Before the first corrupted position (the subject's first token under noise,
  the first differing token under a swap) the corrupted run *is* the clean run, so restoring there
  writes the values already present: those rows are the corrupted run's p(target), read from the
  cached final residual and never computed (a BOS token, or a template's words before the subject).
* **Batches by position.** A batch holds the rows of one restored position ``p`` (every component, layer and
  sample); each row *enters* at its first restored layer from the cached corrupted residual, so a
  layer runs on the rows restored at or below it, and a state still equal to the corrupted run is
  never computed. Rows whose restorations so far agree (the windows of neighbouring layers) are one
  state until they part (:func:`neurotrace.lab.tracing.grids.rowplan.state_key`). The LM head runs on the
  scored position only.

Masked LMs (bidirectional attention: every position sees the restored one) keep the batched full
forward. Results equal the full forward to float precision (tests on tiny models of every family).
"""

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import DynamicCache

from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.forwards import clean_states, compute_dtype
from neurotrace.lab.tracing.grids.rowplan import (
    Restore,
    Row,
    fill_corrupted,
    grid_sites,
    group_rows,
    put,
    state_key,
    target_prob,
    unchanged_prefix,
)
from neurotrace.lab.tracing.noise import noise_hook
from neurotrace.lab.tracing.prepare import PreparedFact

LayerCall = tuple[tuple[Any, ...], dict[str, Any]]   # positional args after hidden_states, keyword args


def supports_fast_decoder(lm: LoadedModel) -> bool:
    """Causal decoders of the adapter table other than GPT-2 (which has its own fast path)."""
    return lm.lm_kind == "causal" and lm.bridge is None and lm.adapter.family != "gpt2"


@torch.no_grad()
def corrupted_run(lm: LoadedModel, ids: Int[Tensor, " pos"], noise: Float[Tensor, "sample n_subject d_model"] | None,
                  subject: tuple[int, int]) -> tuple[list[Float[Tensor, "sample pos d_model"]], DynamicCache]:
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
def layer_calls(lm: LoadedModel, ids: Int[Tensor, " pos"], kv: DynamicCache, p: int
                ) -> tuple[list[LayerCall], DynamicCache]:
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


@dataclass
class Step:
    """One layer for one row batch. Before it, the states are ``h`` (computed so far); the layer runs on
    ``[h ; corrupted residuals of the samples in enter][inputs]`` (rows starting here enter from the
    cache), with the clean attn/mlp values ``restore``; after it, the states are ``[its outputs ;
    resid-restored states]``, the latter the cached corrupted output of the layer with the clean
    ``resid_post`` written at one position (sample, offset, value)."""

    inputs: Int[Tensor, " run"]
    enter: Int[Tensor, " enter"]
    sample: Int[Tensor, " run"]        # noise sample of each state run through the layer
    restore: dict[str, Restore]
    resid: tuple[Int[Tensor, " resid"], Int[Tensor, " resid"], Float[Tensor, "resid d_model"]] | None


def join_plan(chunk: Sequence[Row], n_layers: int, p0: int,
              clean: dict[str, Float[Tensor, "pos ..."]]) -> tuple[int, list[Step], Int[Tensor, " row"]]:
    """The first layer that changes anything, one :class:`Step` per layer from there, each row's final
    state. States still equal to the corrupted run are never computed (they are in the cache)."""
    first = min(r.layers[0] for r in chunk)
    prev: dict[tuple, int] = {}
    steps = []
    for layer in range(first, n_layers):
        run, resid, seen = [], [], set()
        for row in chunk:
            key = state_key(row, layer)
            if key[0] == "corrupted" or key in seen:
                continue
            seen.add(key)
            (resid if row.component == "resid" and row.layers[0] == layer else run).append((key, row))
        enter = sorted({r.sample for k, r in run if state_key(r, layer - 1)[0] == "corrupted"})
        inputs = [prev[state_key(r, layer - 1)] if state_key(r, layer - 1) in prev else len(prev) + enter.index(r.sample)
                  for _, r in run]
        restore = {}
        for component in ("attn", "mlp"):
            us = [u for u, (_, r) in enumerate(run) if r.component == component and layer in r.layers]
            if us:
                pos = torch.tensor([run[u][1].pos for u in us])
                restore[component] = (torch.tensor(us), pos - p0, clean[site_name(f"{component}_out", layer)][pos])
        resid_spec = None
        if resid:
            pos = torch.tensor([r.pos for _, r in resid])
            resid_spec = (torch.tensor([r.sample for _, r in resid]), pos - p0,
                          clean[site_name("resid_post", layer)][pos])
        steps.append(Step(torch.tensor(inputs, dtype=torch.long), torch.tensor(enter, dtype=torch.long),
                          torch.tensor([r.sample for _, r in run], dtype=torch.long), restore, resid_spec))
        prev = {k: i for i, (k, _) in enumerate(run + resid)}
    return first, steps, torch.tensor([prev[state_key(r, n_layers - 1)] for r in chunk])


def _restore_hook(spec: Restore) -> Callable[..., Tensor]:
    def restore(act: Float[Tensor, "state suffix d_model"], site: str) -> Float[Tensor, "state suffix d_model"]:
        out = act.clone()
        put(out, spec)
        return out

    return restore


def _restore_hooks(first: int, steps: Sequence[Step]) -> dict[str, Callable[..., Tensor]]:
    """attn_out / mlp_out hooks writing each step's clean values into its layer."""
    hooks = {}
    for layer, step in zip(range(first, first + len(steps)), steps, strict=True):
        for component, spec in step.restore.items():
            hooks[site_name(f"{component}_out", layer)] = _restore_hook(spec)
    return hooks


@torch.no_grad()
def run_suffix(lm: LoadedModel, first: int, steps: Sequence[Step], p: int,
               resid_pre: Sequence[Float[Tensor, "sample pos d_model"]], kv: DynamicCache, calls: Sequence[LayerCall],
               probe: DynamicCache) -> Float[Tensor, "state suffix d_model"]:
    """Layers ``first..`` for one row batch beginning at position ``p``, over the states' corrupted
    prefixes; returns the final states (states, S, D)."""
    blocks = lm.adapter.module(lm.model, lm.adapter.blocks)
    cache = DynamicCache()
    h = resid_pre[0].new_zeros((0, resid_pre[0].shape[1] - p, resid_pre[0].shape[2]))
    with hooked(lm.model, lm.adapter, _restore_hooks(first, steps)):
        for layer, step in zip(range(first, len(blocks)), steps, strict=True):
            outs = []
            if len(step.inputs):
                x = torch.cat([h, resid_pre[layer][step.enter, p:]])[step.inputs]     # (run, S, D)
                cache.update(kv.layers[layer].keys[step.sample, :, :p], kv.layers[layer].values[step.sample, :, :p],
                             layer)                                              # (run, kv_heads, p, d_head)
                args, kwargs = calls[layer]
                swap = {k: cache if v is probe else v for k, v in kwargs.items()}
                out = blocks[layer](x, *(cache if a is probe else a for a in args), **swap)
                outs.append(out[0] if isinstance(out, tuple) else out)
            if step.resid is not None:
                samples, offsets, values = step.resid
                r = resid_pre[layer + 1][samples, p:].clone()                     # (resid, S, D)
                r[torch.arange(len(samples)), offsets] = values.to(r.dtype)
                outs.append(r)
            h = torch.cat(outs)
    return h


def position_chunks(rows: Sequence[Row], size: int) -> list[list[Row]]:
    """Rows of one restored position together (every component, layer and sample: rows enter the batch at
    their first restored layer), at most ``size`` per batch."""
    by_pos: dict[int, list[Row]] = {}
    for row in sorted(rows, key=lambda r: (r.pos, r.component, r.layers[0], r.sample)):
        by_pos.setdefault(row.pos, []).append(row)
    return [group[i:i + size] for group in by_pos.values() for i in range(0, len(group), size)]


def fast_decoder_grid(lm: LoadedModel, prep: PreparedFact, corr, components: Sequence[str], window: int,
                      reporter: Reporter, rows_per_batch: int = 512,
                      progress: tuple[int, int] = (0, 1), cells: Collection[int] | None = None,
                      anchor: LoadedModel | None = None) -> dict[str, Float[Tensor, "layer pos"]]:
    """Same numbers as :func:`neurotrace.lab.tracing.grids.grid.exact_grid`, computing only what can change
    (``anchor``: see there)."""
    n_layers, samples, base = lm.n_layers, corr.samples, anchor or lm
    clean, _ = clean_states(base, prep.ids, grid_sites(components, n_layers))
    resid_pre, kv = corrupted_run(base, corr.ids, corr.noise, corr.subject)
    if base is not lm:          # the rows' own layers attend in their precision
        dtype = compute_dtype(lm)
        for layer in kv.layers:
            layer.keys, layer.values = layer.keys.to(dtype), layer.values.to(dtype)
    n_cells, groups = group_rows(components, n_layers, len(prep.ids), samples, window, cells)
    out = torch.full((n_cells, samples), float("nan"))
    every = [r for group in groups.values() for r in group]
    prefix = unchanged_prefix(prep.ids, corr)
    done = fill_corrupted(lm, out, [r for r in every if r.pos < prefix], resid_pre[-1], prep)
    for chunk in position_chunks([r for r in every if r.pos >= prefix], rows_per_batch):
        p0 = chunk[0].pos
        calls, probe = layer_calls(lm, corr.ids, kv, p0)
        first, steps, final = join_plan(chunk, n_layers, p0, clean)
        h = run_suffix(lm, first, steps, p0, resid_pre, kv, calls, probe)
        last = lm.adapter.module(lm.model, lm.adapter.final_norm)(h[final, prep.predict_pos - p0])   # (rows, D)
        probs = target_prob(lambda x: lm.adapter.logits_at(lm.model, x), last, prep.target_id)
        out[[r.cell for r in chunk], [r.sample for r in chunk]] = probs.cpu()
        done += len(chunk)
        reporter.step(progress[0] + done, progress[1], f"fact {prep.fact.id or prep.fact.clean_subject}")
    grid = out.mean(1).view(len(components), n_layers, len(prep.ids))
    return {k: grid[i] for i, k in enumerate(components)}
