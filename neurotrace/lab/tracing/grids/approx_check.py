"""How far to trust attribution patching: exact patching on a sample of cells of each approx grid.

The sample is the ``TOP`` cells with the largest |approx| estimate (where a reader looks) plus
``RANDOM`` seeded cells elsewhere, per component. Each sampled cell is restored exactly (batched rows, the
same restoration as the exact grid), so the rank correlation and the magnitude ratio over the sample
say whether the approx map ranks the cells right and whether it under- or over-estimates.
"""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.seeding import make_generator
from neurotrace.lab.tracing.forwards import clean_states, sites_for, target_probs
from neurotrace.lab.tracing.grids.grid import Corrupted
from neurotrace.lab.tracing.noise import noise_hook
from neurotrace.lab.tracing.prepare import PreparedFact

TOP, RANDOM = 8, 8
ROWS_PER_BATCH = 256


def sample_cells(approx: Tensor, seed: int) -> list[tuple[int, int]]:
    """(layer, pos) cells: the TOP largest |approx| and RANDOM seeded others."""
    flat = approx.abs().flatten()
    top = flat.argsort(descending=True)[:TOP].tolist()
    rest = [i for i in range(len(flat)) if i not in set(top)]
    pick = torch.randperm(len(rest), generator=make_generator(seed))[:RANDOM].tolist()
    width = approx.shape[1]
    return [divmod(i, width) for i in top + [rest[j] for j in pick]]


def _restore(rows: list[int], pos: list[int], clean: Tensor) -> Callable[..., Tensor]:
    r, p = torch.tensor(rows), torch.tensor(pos)

    def restore(act: Tensor, site: str) -> Tensor:
        out = act.clone()
        out[r, p] = clean[p].to(act.dtype)
        return out

    return restore


def exact_cells(lm: LoadedModel, prep: PreparedFact, corr: Corrupted, component: str, cells: Sequence[tuple[int, int]],
                window: int) -> list[float]:
    """Mean p(target) over the noise samples with each (layer, pos) cell of ``component`` restored exactly."""
    n_layers, samples = lm.n_layers, corr.samples
    needed = sorted({s for layer, _ in cells for s in sites_for(component, layer, window, n_layers)})
    clean, _ = clean_states(lm, prep.ids, needed)
    jobs = [(c, s) for c in range(len(cells)) for s in range(samples)]
    out = torch.empty(len(jobs))
    for start in range(0, len(jobs), ROWS_PER_BATCH):
        chunk = jobs[start:start + ROWS_PER_BATCH]
        by_site: dict[str, tuple[list[int], list[int]]] = {}
        for r, (c, _) in enumerate(chunk):
            layer, pos = cells[c]
            for site in sites_for(component, layer, window, n_layers):
                rows, ps = by_site.setdefault(site, ([], []))
                rows.append(r)
                ps.append(pos)
        hooks: dict[str, list] = {s: [_restore(r, p, clean[s])] for s, (r, p) in by_site.items()}
        if corr.noise is not None:
            hooks["hook_embed"] = [noise_hook(corr.noise[[s for _, s in chunk]], corr.subject)]
        ids = corr.ids[None].expand(len(chunk), -1)
        out[start:start + len(chunk)] = target_probs(lm, ids, prep.predict_pos, prep.target_id, hooks).cpu()
    return out.view(len(cells), samples).mean(1).tolist()


def check(lm: LoadedModel, prep: PreparedFact, corr: Corrupted, approx: dict[str, Tensor], p_corr: float,
          window: int, seed: int) -> dict[str, dict[str, list[float]]]:
    """Per component: the approx and exact indirect effects on the sampled cells."""
    out = {}
    for k, grid in approx.items():
        cells = sample_cells(grid, seed)
        exact = exact_cells(lm, prep, corr, k, cells, window)
        out[k] = {"approx": [float(grid[layer, pos]) for layer, pos in cells], "exact": [v - p_corr for v in exact],
                  "cells": [float(layer * grid.shape[1] + pos) for layer, pos in cells]}
    return out
