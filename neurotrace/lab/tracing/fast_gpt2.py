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
Results equal the full forward to float precision (tests compare them with the per-cell loop).
"""

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from neurotrace.lab.model.adapters import site_name
from neurotrace.lab.model.hooks import hooked
from neurotrace.lab.model.loading import LoadedModel
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.prepare import PreparedFact, clean_states, noise_hook, sites_for


def supports_fast_path(lm: LoadedModel) -> bool:
    c = lm.config
    return (lm.adapter.family == "gpt2" and lm.kind == "causal" and lm.bridge is None
            and getattr(c, "scale_attn_weights", True)
            and not getattr(c, "scale_attn_by_inverse_layer_idx", False)
            and not getattr(c, "reorder_and_upcast_attn", False))


@torch.no_grad()
def _corrupted_cache(lm: LoadedModel, ids: Tensor, noise: Tensor | None, subject: tuple[int, int]):
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


def _attend(block, x: Tensor, prefix_qkv: Tensor, p: int, query: int | None = None) -> Tensor:
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


@dataclass
class _Level:
    """The distinct states after one layer: each one's parent state (before the layer), noise sample,
    and the clean values restored in the layer per kind: (state, suffix offset, value)."""

    parent: Tensor
    sample: Tensor
    restore: dict[str, tuple[Tensor, Tensor, Tensor]]


def _state_key(row: tuple, layer: int) -> tuple:
    """Rows whose keys are equal after ``layer`` hold identical states there (same sample, same restorations
    so far), e.g. the window rows of neighbouring layers until their windows part."""
    cell, kind, layers, pos, sample = row
    if kind == "resid":
        return ("resid", cell, sample)
    done = tuple(x for x in layers if x <= layer)
    return (kind, pos, sample, done) if done else ("corrupted", sample)


def _distinct(chunk: list, layer: int) -> tuple[list[int], list[int]]:
    """Each row's state index after ``layer`` and the first row of each state."""
    index: dict[tuple, int] = {}
    state, firsts = [], []
    for i, row in enumerate(chunk):
        key = _state_key(row, layer)
        if key not in index:
            index[key] = len(index)
            firsts.append(i)
        state.append(index[key])
    return state, firsts


def _plan(chunk: list, start: int, n_layers: int, p0: int, clean: dict[str, Tensor]):
    """Initial states (rows before ``start``), one :class:`_Level` per layer, and each row's final state."""
    state, firsts = _distinct(chunk, start - 1)
    initial = firsts
    levels = []
    for layer in range(start, n_layers):
        new_state, new_firsts = _distinct(chunk, layer)
        restore = {}
        for kind in ("attn", "mlp"):
            us = [u for u, i in enumerate(new_firsts) if chunk[i][1] == kind and layer in chunk[i][2]]
            if us:
                pos = torch.tensor([chunk[new_firsts[u]][3] for u in us])
                restore[kind] = (torch.tensor(us), pos - p0, clean[site_name(f"{kind}_out", layer)][pos])
        levels.append(_Level(parent=torch.tensor([state[i] for i in new_firsts]),
                             sample=torch.tensor([chunk[i][4] for i in new_firsts]), restore=restore))
        state = new_state
    return initial, levels, torch.tensor(state)


def _put(t: Tensor, spec: tuple[Tensor, Tensor, Tensor] | None, only: int | None = None) -> None:
    """Write restored values into ``t`` (states, S, D) in place; with ``only``, just those at that offset
    (then ``t`` holds that offset alone)."""
    if spec is None:
        return
    states, offsets, values = spec
    if only is None:
        t[states, offsets] = values
    else:
        keep = offsets == only
        t[states[keep], 0] = values[keep]


@torch.no_grad()
def _run_suffix(lm: LoadedModel, h: Tensor, start: int, p: int, qkv: list[Tensor], levels: list[_Level],
                predict_pos: int, target_id: int) -> Tensor:
    """Blocks ``start..`` on the distinct suffix states ``h`` (states, S, D) beginning at position ``p``;
    the last block computes only the scored position. Returns p(target) per final state."""
    blocks = lm.adapter.module(lm.model, lm.adapter.blocks)
    last, q = len(blocks) - 1, predict_pos - p
    for layer, level in zip(range(start, len(blocks)), levels, strict=True):
        block, h = blocks[layer], h[level.parent]
        only = q if layer == last else None
        a = _attend(block, block.ln_1(h), qkv[layer][level.sample, :p], p, query=only)
        _put(a, level.restore.get("attn"), only)
        h = (h if only is None else h[:, q:q + 1]) + a
        m = block.mlp(block.ln_2(h))
        _put(m, level.restore.get("mlp"), only)
        h = h + m
    h = h[:, 0] if start <= last else h[:, q]
    h = lm.adapter.module(lm.model, lm.adapter.final_norm)(h)
    return torch.softmax(lm.adapter.logits_at(lm.model, h).float(), dim=-1)[:, target_id]


def fast_grid(lm: LoadedModel, prep: PreparedFact, corr, kinds: Sequence[str], window: int, reporter: Reporter,
              rows_per_batch: int = 512, progress: tuple[int, int] = (0, 1)) -> dict[str, Tensor]:
    """Same numbers as :func:`neurotrace.lab.tracing.grid.exact_grid`, computing only what can change.

    Rows are grouped by their first changed layer and sorted by restored position, so a batch shares
    one start layer and begins at the smallest restored position among its rows."""
    n_layers, n_pos, samples = lm.n_layers, len(prep.ids), corr.samples
    kind_site = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}
    sites = [site_name(kind_site[k], layer) for k in kinds for layer in range(n_layers)]
    clean, _ = clean_states(lm, prep.ids, sites)
    resid_pre, qkv = _corrupted_cache(lm, corr.ids, corr.noise, corr.subject)
    groups: dict[int, list[tuple[int, str, list[int], int, int]]] = defaultdict(list)
    cells = [(k, layer, p) for k in kinds for layer in range(n_layers) for p in range(n_pos)]
    for c, (k, layer, p) in enumerate(cells):
        layers = [int(s.split(".")[1]) for s in sites_for(k, layer, window, n_layers)]
        start = layer + 1 if k == "resid" else layers[0]
        groups[start] += [(c, k, layers, p, s) for s in range(samples)]
    out = torch.empty(len(cells), samples)
    done = 0
    for start, rows in groups.items():
        rows.sort(key=lambda r: r[3])
        for chunk in _chunks(rows, rows_per_batch):
            out[[r[0] for r in chunk], [r[4] for r in chunk]] = _chunk_probs(lm, prep, chunk, start, resid_pre, qkv,
                                                                           clean, n_layers).cpu()
            done += len(chunk)
            reporter.step(progress[0] + done, progress[1], f"fact {prep.fact.id or prep.fact.clean_subject}")
    grid = out.mean(1).view(len(kinds), n_layers, n_pos)
    return {k: grid[i] for i, k in enumerate(kinds)}


def _chunks(rows: list, size: int, min_rows: int = 64):
    """Consecutive rows (sorted by restored position) in batches of at most ``size``; a batch closes at a
    change of position once it holds ``min_rows``, so batches rarely reach back to earlier positions."""
    chunk: list = []
    for row in rows:
        if chunk and (len(chunk) >= size or (row[3] != chunk[-1][3] and len(chunk) >= min_rows)):
            yield chunk
            chunk = []
        chunk.append(row)
    if chunk:
        yield chunk


def _chunk_probs(lm, prep, chunk, start, resid_pre, qkv, clean, n_layers) -> Tensor:
    p0 = min(r[3] for r in chunk)
    initial, levels, final = _plan(chunk, start, n_layers, p0, clean)
    h = resid_pre[start][torch.tensor([chunk[i][4] for i in initial]), p0:].clone()   # (states, S, D)
    resid = [(u, chunk[i][3]) for u, i in enumerate(initial) if chunk[i][1] == "resid"]
    if resid:                                                                 # resid restored at layer start-1
        pos = torch.tensor([q for _, q in resid])
        h[torch.tensor([u for u, _ in resid]), pos - p0] = clean[site_name("resid_post", start - 1)][pos]
    return _run_suffix(lm, h, start, p0, qkv, levels, prep.predict_pos, prep.target_id)[final]
