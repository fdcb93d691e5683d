"""Exact causal tracing for GPT-2, computing only what a restoration can change.

Restoring one site at (layer L, position p) in the corrupted run leaves (a) every layer below the
first restored one and (b) every position before p exactly as in the corrupted run (attention is
causal). So each patched row starts at its first restored layer from the cached corrupted residual,
runs only positions p.. through the remaining blocks, and attends to the cached corrupted keys and
values of positions < p. The blocks are GPT-2's own modules (LayerNorms, projections, MLP); only the
attention over [cached prefix ; suffix] is written out here. Two more shortcuts do the same arithmetic
once instead of many times: rows whose restorations so far are identical (the mlp/attn windows of
neighbouring layers, until the windows part) share one state per layer and fork when they differ; and
the last block computes only the scored position (earlier positions need only its keys and values).
Rows restored before the first corrupted position are the corrupted run itself
(:func:`neurotrace.lab.tracing.grids.rowplan.unchanged_prefix`) and are not computed.
Results equal the full forward to float precision (tests compare them with the per-cell loop).
"""

import math
from collections.abc import Collection, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.forwards import clean_states, compute_dtype
from neurotrace.lab.tracing.grids.rowplan import (
    Level,
    chunks,
    fill_corrupted,
    grid_sites,
    group_rows,
    initial_states,
    plan,
    put,
    unchanged_prefix,
)
from neurotrace.lab.tracing.noise import noise_hook
from neurotrace.lab.tracing.prepare import PreparedFact


def supports_fast_path(lm: LoadedModel) -> bool:
    c = lm.config
    return (lm.adapter.family == "gpt2" and lm.lm_kind == "causal" and lm.bridge is None
            and getattr(c, "scale_attn_weights", True)
            and not getattr(c, "scale_attn_by_inverse_layer_idx", False)
            and not getattr(c, "reorder_and_upcast_attn", False))


@torch.no_grad()
def _corrupted_cache(lm: LoadedModel, ids: Int[Tensor, " pos"], noise: Float[Tensor, "sample n_subject d_model"] | None,
                     subject: tuple[int, int]
                     ) -> tuple[list[Float[Tensor, "sample pos d_model"]], list[Float[Tensor, "sample pos 3*d_model"]]]:
    """Per layer: the corrupted residual entering the block (plus, last, the final block's output) and
    the block's qkv: (samples, pos, ...)."""
    blocks = lm.adapter.module(lm.model, lm.adapter.blocks)
    resid: list[Tensor] = []
    qkv: list[Tensor] = []
    handles = []
    for block in blocks:
        handles.append(block.register_forward_pre_hook(
            lambda m, args, kwargs: resid.append((args[0] if args else kwargs["hidden_states"]).clone()),
            with_kwargs=True))
        handles.append(block.attn.c_attn.register_forward_hook(lambda m, a, out: qkv.append(out.clone())))
    handles.append(blocks[-1].register_forward_hook(
        lambda m, a, out: resid.append((out[0] if isinstance(out, tuple) else out).clone())))

    samples = 1 if noise is None else noise.shape[0]
    body = lm.adapter.module(lm.model, lm.adapter.base)
    try:
        with hooked(lm.model, lm.adapter, {} if noise is None else {"hook_embed": noise_hook(noise, subject)}):
            body(input_ids=ids[None].expand(samples, -1).to(lm.device))
    finally:
        for h in handles:
            h.remove()
    return resid, qkv


def _attend(block, x: Float[Tensor, "state suffix d_model"], prefix_qkv: Float[Tensor, "state prefix 3*d_model"], p: int,
            query: int | None = None) -> Float[Tensor, "state out_pos d_model"]:
    """GPT-2 attention for suffix rows ``x`` (rows, S, D) over [prefix keys/values ; suffix]; with ``query``
    only that suffix offset's output is computed (rows, 1, D)."""
    attn = block.attn
    n_heads, d = attn.num_heads, x.shape[-1]
    dh = d // n_heads
    qkv = attn.c_attn(x)                                                     # (rows, S, 3D)
    full = torch.cat([prefix_qkv, qkv], dim=1)                               # (rows, p + S, 3D)
    offsets = torch.arange(x.shape[1], device=x.device)
    if query is not None:
        qkv, offsets = qkv[:, query:query + 1], offsets[query:query + 1]
    q = qkv[..., :d].unflatten(-1, (n_heads, dh)).transpose(1, 2)            # (rows, H, S', dh)
    k = full[..., d:2 * d].unflatten(-1, (n_heads, dh)).transpose(1, 2)      # (rows, H, p+S, dh)
    v = full[..., 2 * d:].unflatten(-1, (n_heads, dh)).transpose(1, 2)
    mask = torch.arange(full.shape[1], device=x.device)[None, :] <= (p + offsets)[:, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1 / math.sqrt(dh))
    return attn.c_proj(out.transpose(1, 2).flatten(2))                       # (rows, S', D)


@torch.no_grad()
def _run_suffix(lm: LoadedModel, h: Float[Tensor, "state suffix d_model"], start: int, p: int,
                qkv: list[Float[Tensor, "sample pos 3*d_model"]], levels: list[Level], predict_pos: int, target_id: int
                ) -> Float[Tensor, " final_state"]:
    """Blocks ``start..`` on the distinct suffix states ``h`` (states, S, D) beginning at position ``p``;
    the last block computes only the scored position. Returns p(target) per final state."""
    blocks = lm.adapter.module(lm.model, lm.adapter.blocks)
    last, q = len(blocks) - 1, predict_pos - p
    for layer, level in zip(range(start, len(blocks)), levels, strict=True):
        block, h = blocks[layer], h[level.parent]
        only = q if layer == last else None
        a = _attend(block, block.ln_1(h), qkv[layer][level.sample, :p], p, query=only)
        put(a, level.restore.get("attn"), only)
        h = (h if only is None else h[:, q:q + 1]) + a
        m = block.mlp(block.ln_2(h))
        put(m, level.restore.get("mlp"), only)
        h = h + m
    h = h[:, 0] if start <= last else h[:, q]
    h = lm.adapter.module(lm.model, lm.adapter.final_norm)(h)
    return torch.softmax(lm.adapter.logits_at(lm.model, h).float(), dim=-1)[:, target_id]


def fast_grid(lm: LoadedModel, prep: PreparedFact, corr, components: Sequence[str], window: int, reporter: Reporter,
              rows_per_batch: int = 512, progress: tuple[int, int] = (0, 1), cells: Collection[int] | None = None,
              anchor: LoadedModel | None = None) -> dict[str, Float[Tensor, "layer pos"]]:
    """Same numbers as :func:`neurotrace.lab.tracing.grids.grid.exact_grid`, computing only what can change.

    Rows are grouped by their first changed layer and sorted by restored position, so a batch shares
    one start layer and begins at the smallest restored position among its rows. ``anchor``: see
    :func:`neurotrace.lab.tracing.grids.grid.exact_grid`."""
    n_layers, samples, base = lm.n_layers, corr.samples, anchor or lm
    clean, _ = clean_states(base, prep.ids, grid_sites(components, n_layers))
    resid_pre, qkv = _corrupted_cache(base, corr.ids, corr.noise, corr.subject)
    if base is not lm:          # the rows' own layers attend in their precision
        dtype = compute_dtype(lm)
        qkv = [t.to(dtype) for t in qkv]
    n_cells, groups = group_rows(components, n_layers, len(prep.ids), samples, window, cells)
    out = torch.full((n_cells, samples), float("nan"))
    prefix = unchanged_prefix(prep.ids, corr)
    done = fill_corrupted(lm, out, [r for rows in groups.values() for r in rows if r.pos < prefix], resid_pre[-1], prep)
    for start, rows in groups.items():
        for chunk in chunks([r for r in rows if r.pos >= prefix], rows_per_batch):
            p0 = min(r.pos for r in chunk)
            initial, levels, final = plan(chunk, start, n_layers, p0, clean)
            h = initial_states(chunk, initial, start, p0, resid_pre, clean)
            probs = _run_suffix(lm, h, start, p0, qkv, levels, prep.predict_pos, prep.target_id)[final]
            out[[r.cell for r in chunk], [r.sample for r in chunk]] = probs.cpu()
            done += len(chunk)
            reporter.step(progress[0] + done, progress[1], f"fact {prep.fact.id or prep.fact.clean_subject}")
    grid = out.mean(1).view(len(components), n_layers, len(prep.ids))
    return {k: grid[i] for i, k in enumerate(components)}
