"""The row plan shared by the exact fast paths (:mod:`fast_gpt2`, :mod:`fast_decoder`).

A *row* is one (grid cell, noise sample) of the exact grid: restore the clean state of the cell's
sites at one position in one corrupted sample. Restoring site(s) from layer ``start`` on leaves every
layer below ``start`` as in the corrupted run, so rows are grouped by their first changed layer and
sorted by restored position; a batch of rows shares one start layer and begins at the smallest
restored position ``p0`` among its rows (earlier positions are unchanged, attention being causal).

Rows whose restorations so far are identical (the mlp/attn windows of neighbouring layers, until the
windows part) hold identical states, so each layer runs once per *distinct* state: a :class:`Level`
per layer says which state each new state comes from (``parent``), its noise sample, and the clean
values written into it in that layer. The arithmetic per state is exactly a full row's.
"""

from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.tracing.forwards import COMPONENT_SITE, sites_for

# (state index, suffix offset, clean value): n restorations
Restore = tuple[Int[Tensor, " n"], Int[Tensor, " n"], Float[Tensor, "n d_model"]]


class Row(NamedTuple):
    """One (cell, sample) row: grid cell index, component, the layers it restores, position, noise sample."""

    cell: int
    component: str
    layers: tuple[int, ...]
    pos: int
    sample: int


@dataclass
class Level:
    """The distinct states after one layer: each one's parent state (before the layer), noise sample,
    and the clean values restored in the layer per component."""

    parent: Int[Tensor, " state"]
    sample: Int[Tensor, " state"]
    restore: dict[str, Restore]


def grid_sites(components: Sequence[str], n_layers: int) -> list[str]:
    """Every site a grid over ``components`` restores (resid_post / mlp_out / attn_out per layer)."""
    return [site_name(COMPONENT_SITE[k], layer) for k in components for layer in range(n_layers)]


def group_rows(components: Sequence[str], n_layers: int, n_pos: int, samples: int, window: int,
               only: Collection[int] | None = None) -> tuple[int, dict[int, list[Row]]]:
    """(number of cells, {first changed layer: rows sorted by position}); cells are ordered
    (component, layer, position) as in the grid. With ``only``, rows of those flat cell indices alone."""
    groups: dict[int, list[Row]] = defaultdict(list)
    cells = [(k, layer, p) for k in components for layer in range(n_layers) for p in range(n_pos)]
    keep = set(range(len(cells))) if only is None else set(only)
    for c, (k, layer, p) in enumerate(cells):
        if c not in keep:
            continue
        layers = tuple(int(s.split(".")[1]) for s in sites_for(k, layer, window, n_layers))
        start = layer + 1 if k == "resid" else layers[0]
        groups[start] += [Row(c, k, layers, p, s) for s in range(samples)]
    for rows in groups.values():
        rows.sort(key=lambda r: r.pos)
    return len(cells), groups


def state_key(row: Row, layer: int) -> tuple:
    """Rows whose keys are equal after ``layer`` hold identical states there (same sample, same
    restorations so far); ``("corrupted", sample)`` while nothing is restored yet."""
    if row.component == "resid":
        return ("resid", row.cell, row.sample) if layer >= row.layers[0] else ("corrupted", row.sample)
    done = tuple(x for x in row.layers if x <= layer)
    return (row.component, row.pos, row.sample, done) if done else ("corrupted", row.sample)


def _distinct(chunk: Sequence[Row], layer: int) -> tuple[list[int], list[int]]:
    """Each row's state index after ``layer`` and the first row of each state."""
    index: dict[tuple, int] = {}
    state, firsts = [], []
    for i, row in enumerate(chunk):
        key = state_key(row, layer)
        if key not in index:
            index[key] = len(index)
            firsts.append(i)
        state.append(index[key])
    return state, firsts


def plan(chunk: Sequence[Row], start: int, n_layers: int, p0: int,
         clean: dict[str, Float[Tensor, "pos ..."]]) -> tuple[list[int], list[Level], Int[Tensor, " row"]]:
    """Initial states (their first rows), one :class:`Level` per layer ``start..``, each row's final state."""
    state, initial = _distinct(chunk, start - 1)
    levels = []
    for layer in range(start, n_layers):
        new_state, new_firsts = _distinct(chunk, layer)
        restore = {}
        for component in ("attn", "mlp"):
            us = [u for u, i in enumerate(new_firsts) if chunk[i].component == component and layer in chunk[i].layers]
            if us:
                pos = torch.tensor([chunk[new_firsts[u]].pos for u in us])
                restore[component] = (torch.tensor(us), pos - p0, clean[site_name(f"{component}_out", layer)][pos])
        levels.append(Level(parent=torch.tensor([state[i] for i in new_firsts]),
                            sample=torch.tensor([chunk[i].sample for i in new_firsts]), restore=restore))
        state = new_state
    return initial, levels, torch.tensor(state)


def initial_states(chunk: Sequence[Row], initial: Sequence[int], start: int, p0: int,
                   resid_pre: Sequence[Float[Tensor, "sample pos d_model"]],
                   clean: dict[str, Float[Tensor, "pos ..."]]) -> Float[Tensor, "state suffix d_model"]:
    """The states entering layer ``start`` (states, S, D) for positions ``p0..``: the corrupted residual,
    with resid rows' clean ``resid_post`` of layer ``start - 1`` written at their position."""
    h = resid_pre[start][torch.tensor([chunk[i].sample for i in initial]), p0:].clone()   # (states, S, D)
    resid = [(u, chunk[i].pos) for u, i in enumerate(initial) if chunk[i].component == "resid"]
    if resid:
        pos = torch.tensor([q for _, q in resid])
        h[torch.tensor([u for u, _ in resid]), pos - p0] = clean[site_name("resid_post", start - 1)][pos].to(h.dtype)
    return h


def put(t: Float[Tensor, "state suffix d_model"], spec: Restore | None, only: int | None = None) -> None:
    """Write restored values into ``t`` (states, S, D) in place; with ``only``, just those at that offset
    (then ``t`` holds that offset alone)."""
    if spec is None:
        return
    states, offsets, values = spec
    if only is None:
        t[states, offsets] = values.to(t.dtype)
    else:
        keep = offsets == only
        t[states[keep], 0] = values[keep].to(t.dtype)


def shared_prefix(a: Int[Tensor, " pos"], b: Int[Tensor, " pos"]) -> int:
    """How many leading tokens two same-length prompts share."""
    differ = (a != b).nonzero()
    return int(differ[0, 0]) if len(differ) else len(a)


def unchanged_prefix(clean_ids: Int[Tensor, " pos"], corr) -> int:
    """Positions before the first one the corruption touches (noise on the subject, or a token that
    differs from the clean prompt): there the corrupted states *are* the clean ones, so restoring a
    site there writes the values already present and the row is the corrupted run itself."""
    first = shared_prefix(clean_ids, corr.ids)
    return min(first, corr.subject[0]) if corr.noise is not None else first


def fill_corrupted(lm, out: Float[Tensor, "cell sample"], rows: Sequence[Row],
                   final_resid: Float[Tensor, "sample pos d_model"], prep) -> int:
    """Write into ``out`` (cells, samples) each unchanged-prefix row's corrupted p(target), from the
    cached corrupted residual leaving the last layer ``final_resid`` (samples, pos, D); returns the count."""
    if rows:
        h = lm.adapter.module(lm.model, lm.adapter.final_norm)(final_resid[:, prep.predict_pos])
        base = target_prob(lambda x: lm.adapter.logits_at(lm.model, x), h, prep.target_id).cpu()
        out[[r.cell for r in rows], [r.sample for r in rows]] = base[[r.sample for r in rows]]
    return len(rows)


def chunks(rows: Sequence[Row], size: int, min_rows: int = 64) -> Iterator[list[Row]]:
    """Consecutive rows (sorted by restored position) in batches of at most ``size``; a batch closes at a
    change of position once it holds ``min_rows``, so batches rarely reach back to earlier positions."""
    chunk: list[Row] = []
    for row in rows:
        if chunk and (len(chunk) >= size or (row.pos != chunk[-1].pos and len(chunk) >= min_rows)):
            yield chunk
            chunk = []
        chunk.append(row)
    if chunk:
        yield chunk


def target_prob(logits_of, h: Float[Tensor, "row d_model"], target_id: int, rows_per_head: int = 64
                ) -> Float[Tensor, " row"]:
    """p(target) for final hidden states ``h`` (rows, D), applying ``logits_of`` (the LM head) to
    ``rows_per_head`` rows at a time (a 262k vocabulary makes (512, vocab) logits ~0.5 GB)."""
    out = [torch.softmax(logits_of(h[i:i + rows_per_head]).float(), dim=-1)[:, target_id]
           for i in range(0, h.shape[0], rows_per_head)]
    return torch.cat(out) if out else h.new_zeros(0)
