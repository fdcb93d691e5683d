"""The tracing grids: exact restoration, attribution patching (approximate), context and head patching.

Exact (ROME's causal tracing): for every (component, layer, position) cell and every noise sample, run the
corrupted input while restoring the clean state of that cell, and read p(target). All cells x samples
are rows of a few large batches (each row carries its own noise sample and its own restoration), and
only the scored position's logits are computed. Results are identical to one forward per cell.

Approximate (attribution patching): one forward and one backward on the corrupted input give, for
every site, the gradient of p(target); the effect of restoring cell (site, pos) is estimated to first
order as ``(clean - corrupted) . grad``. Windows add the per-layer estimates.
"""

from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.forwards import COMPONENT_SITE, clean_states, sites_for, target_probs
from neurotrace.lab.tracing.grids.fast_decoder import fast_decoder_grid, supports_fast_decoder
from neurotrace.lab.tracing.grids.fast_gpt2 import fast_grid, supports_fast_path
from neurotrace.lab.tracing.noise import noise_hook
from neurotrace.lab.tracing.prepare import PreparedFact


@dataclass
class Corrupted:
    """The corrupted input: token ids plus (for noise) one noise tensor per sample."""

    ids: Int[Tensor, " pos"]
    noise: Float[Tensor, "sample n_subject d_model"] | None   # None: swap
    subject: tuple[int, int]

    @property
    def samples(self) -> int:
        return 1 if self.noise is None else self.noise.shape[0]


def _restore_hook(rows: Int[Tensor, " row"], pos: Int[Tensor, " row"], clean: Float[Tensor, "pos ..."]
                  ) -> Callable[..., Tensor]:
    def restore(act: Tensor, site: str) -> Tensor:
        out = act.clone()
        out[rows, pos] = clean[pos].to(device=act.device, dtype=act.dtype)
        return out

    return restore


def corrupted_probs(lm: LoadedModel, prep: PreparedFact, corr: Corrupted) -> Float[Tensor, " sample"]:
    """p(target) of each corrupted sample with nothing restored, shape (samples,)."""
    ids = corr.ids[None].expand(corr.samples, -1)
    hooks = {} if corr.noise is None else {"hook_embed": noise_hook(corr.noise, corr.subject)}
    return target_probs(lm, ids, prep.predict_pos, prep.target_id, hooks)


def exact_grid(lm: LoadedModel, prep: PreparedFact, corr: Corrupted, components: Sequence[str], window: int,
               reporter: Reporter, rows_per_batch: int = 512, progress: tuple[int, int] = (0, 1),
               force_full: bool = False, cells: Collection[int] | None = None, anchor: LoadedModel | None = None
               ) -> dict[str, Float[Tensor, "layer pos"]]:
    """Mean p(target) with each cell restored: {component: (n_layers, pos)}.

    Every (cell, noise sample) is one row of a batched full forward. Causal decoders (unless
    ``force_full``) take a fast path with the same numbers that computes only the layers and positions
    a restoration can change: :func:`neurotrace.lab.tracing.grids.fast_gpt2.fast_grid` for GPT-2,
    :func:`neurotrace.lab.tracing.grids.fast_decoder.fast_decoder_grid` for every other decoder family.
    Masked LMs take the full forward. With ``cells`` (flat indices over (component, layer, position)),
    only those cells are computed; the others are NaN.

    ``anchor`` (a bfloat16 run: the float32 model ``lm`` was copied from) computes the fast paths' once-per-fact
    runs, the clean states and the corrupted residuals, keys and values, so every row starts from float32 states
    and only its own suffix of layers runs in ``lm``'s precision."""
    if supports_fast_path(lm) and not force_full:
        return fast_grid(lm, prep, corr, components, window, reporter, rows_per_batch, progress, cells, anchor)
    if supports_fast_decoder(lm) and not force_full:
        return fast_decoder_grid(lm, prep, corr, components, window, reporter, rows_per_batch, progress, cells,
                                 anchor)
    needed = restored_sites(lm, components, window)
    clean, _ = clean_states(lm, prep.ids, needed)
    return restored_grid(lm, prep, corr, components, window, clean, target_probs, reporter, rows_per_batch, progress,
                         cells=cells)


def restored_sites(lm: LoadedModel, components: Sequence[str], window: int) -> list[str]:
    """Every site some (component, layer) cell of the grid restores."""
    n = lm.n_layers
    return sorted({s for k in components for layer in range(n) for s in sites_for(k, layer, window, n)})


def restored_grid(lm: LoadedModel, prep: PreparedFact, corr: Corrupted, components: Sequence[str], window: int,
                  clean: dict[str, Float[Tensor, "pos ..."]], probs: Callable[..., Tensor], reporter: Reporter,
                  rows_per_batch: int = 512, progress: tuple[int, int] = (0, 1), tag: str = "",
                  cells: Collection[int] | None = None) -> dict[str, Float[Tensor, "layer pos"]]:
    """The batched full-forward grid: every (cell, noise sample) is one row; ``probs(lm, ids, pos, target,
    hooks)`` runs the rows (:func:`target_probs` with torch hooks, or nnsight's traced forward). With
    ``cells``, only those flat cell indices (the others NaN)."""
    n_layers, n_pos, samples = lm.n_layers, len(prep.ids), corr.samples
    every = [(k, layer, p) for k in components for layer in range(n_layers) for p in range(n_pos)]
    chosen = sorted(set(cells)) if cells is not None else list(range(len(every)))
    cells_ = [every[c] for c in chosen]
    out = torch.full((len(every) * samples,), float("nan"))
    todo = (torch.tensor(chosen, dtype=torch.long)[:, None] * samples + torch.arange(samples)).flatten()
    for start in range(0, len(todo), rows_per_batch):
        rows = torch.arange(start, min(start + rows_per_batch, len(todo)))
        cell_idx, sample_idx = rows // samples, rows % samples
        by_site: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for r, c in enumerate(cell_idx.tolist()):
            component, layer, pos = cells_[c]
            for site in sites_for(component, layer, window, n_layers):
                by_site[site].append((r, pos))
        hooks: dict[str, list] = {s: [_restore_hook(torch.tensor([a for a, _ in v]), torch.tensor([b for _, b in v]),
                                                    clean[s])] for s, v in by_site.items()}
        if corr.noise is not None:
            hooks["hook_embed"] = [noise_hook(corr.noise, corr.subject, sample_idx)]
        ids = corr.ids[None].expand(len(rows), -1)
        out[todo[rows]] = probs(lm, ids, prep.predict_pos, prep.target_id, hooks).cpu()
        reporter.step(progress[0] + start + len(rows), progress[1],
                      f"fact {prep.fact.id or prep.fact.clean_subject}{tag}")
    grid = out.view(len(every), samples).mean(1).view(len(components), n_layers, n_pos)
    return {k: grid[i] for i, k in enumerate(components)}


def leaf_embed(corr: Corrupted) -> Callable[..., Tensor]:
    """A hook_embed hook for attribution patching: the corrupted embeddings (noise added to the subject)
    as a fresh leaf that requires grad, so the backward pass reaches every recorded site."""
    def embed(act: Tensor, site: str) -> Tensor:
        out = act.detach().clone()
        if corr.noise is not None:
            s, e = corr.subject
            out[:, s:e] += corr.noise.to(device=out.device, dtype=out.dtype)
        return out.requires_grad_(True)

    return embed


def approx_grid(lm: LoadedModel, prep: PreparedFact, corr: Corrupted, components: Sequence[str],
                window: int) -> dict[str, Float[Tensor, "layer pos"]]:
    """Attribution-patching estimate of the *indirect effect* of each cell: {component: (n_layers, pos)}."""
    n_layers = lm.n_layers
    sites = [site_name(COMPONENT_SITE[k], layer) for k in components for layer in range(n_layers)]
    clean, _ = clean_states(lm, prep.ids, sites)
    acts: dict[str, Tensor] = {}

    def record(act: Tensor, site: str) -> None:
        act.retain_grad()
        acts[site] = act

    body = lm.adapter.module(lm.model, lm.adapter.base)
    ids = corr.ids[None].expand(corr.samples, -1).to(lm.device)
    with torch.enable_grad(), hooked(lm.model, lm.adapter, {"hook_embed": leaf_embed(corr), **{s: record for s in sites}}):
        hidden = body(input_ids=ids).last_hidden_state
        logits = lm.adapter.logits_at(lm.model, hidden[:, prep.predict_pos])
        torch.softmax(logits.float(), dim=-1)[:, prep.target_id].sum().backward()
    per_site = {s: ((clean[s][None] - acts[s].detach()) * acts[s].grad).sum(-1).mean(0).cpu() for s in sites}
    out = {}
    for k in components:
        rows = []
        for layer in range(n_layers):
            members = [s for s in sites_for(k, layer, window, n_layers)]
            rows.append(torch.stack([per_site[s] for s in members]).sum(0))
        out[k] = torch.stack(rows)
    return out


def layer_curve(lm: LoadedModel, prep: PreparedFact, ids: Int[Tensor, " pos"], positions: Sequence[int]
                ) -> Float[Tensor, " layer"]:
    """p(target) on corrupted ``ids`` with the clean resid restored at ``positions`` per layer: (n_layers,)."""
    n_layers = lm.n_layers
    sites = [site_name("resid_post", layer) for layer in range(n_layers)]
    clean, _ = clean_states(lm, prep.ids, sites)
    pos = torch.tensor(list(positions))
    hooks = {}
    for layer, site in enumerate(sites):
        rows = torch.full((len(pos),), layer)
        hooks[site] = _restore_hook(rows, pos, clean[site])
    batch = ids[None].expand(n_layers, -1)
    return target_probs(lm, batch, prep.predict_pos, prep.target_id, hooks).cpu()


def head_grid(lm: LoadedModel, prep: PreparedFact, corr: Corrupted, position: int | None = None
              ) -> Float[Tensor, "layer head"]:
    """Mean p(target) when one head's clean output (hook_z) is restored at ``position`` (default: the
    scored position) in the corrupted run: (n_layers, n_heads)."""
    n_layers, heads = lm.n_layers, lm.n_heads
    pos = prep.predict_pos if position is None else position
    z_sites = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    clean: dict[str, Tensor] = {}

    def save(act: Tensor, site: str) -> None:
        clean[site] = act[0].detach().clone()

    body = lm.adapter.module(lm.model, lm.adapter.base)
    with torch.no_grad(), hooked(lm.model, lm.adapter, {s: save for s in z_sites}):
        body(input_ids=prep.ids[None].to(lm.device))
    samples, cells = corr.samples, n_layers * heads
    rows = torch.arange(cells * samples)
    cell, sample = rows // samples, rows % samples
    hooks: dict[str, list] = {}
    for layer, site in enumerate(z_sites):
        d_head = clean[site].shape[-1] // heads
        sel = rows[(cell // heads) == layer]
        hooks[site] = [_head_restore(sel, (cell[sel] % heads), pos, clean[site], d_head)]
    if corr.noise is not None:
        hooks["hook_embed"] = [noise_hook(corr.noise[sample], corr.subject)]
    with hooked(lm.model, lm.adapter, hooks):
        p = target_probs(lm, corr.ids[None].expand(len(rows), -1), prep.predict_pos, prep.target_id)
    return p.cpu().view(cells, samples).mean(1).view(n_layers, heads)


def _head_restore(rows: Int[Tensor, " row"], heads: Int[Tensor, " row"], pos: int, clean: Float[Tensor, "pos width"],
                  d_head: int) -> Callable[..., Tensor]:
    def restore(act: Tensor, site: str) -> Tensor:
        out = act.clone()
        for r, h in zip(rows.tolist(), heads.tolist(), strict=True):
            out[r, pos, h * d_head:(h + 1) * d_head] = clean[pos, h * d_head:(h + 1) * d_head]
        return out

    return restore
