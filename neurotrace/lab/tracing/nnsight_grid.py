"""The exact causal-tracing grid with every forward run through nnsight (``backend='nnsight'``).

The same rows, restorations and noise as :func:`neurotrace.lab.tracing.grid.exact_grid`'s batched full
forward; the hooks are realised by :func:`neurotrace.lab.model.nnsight_backend.traced_probs`, so the
numbers equal the hf backend's and the same code can run on NDIF.
"""

from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from neurotrace.lab.model.loading import LoadedModel
from neurotrace.lab.model.nnsight_backend import traced_probs, traced_states
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.grid import Corrupted
from neurotrace.lab.tracing.prepare import PreparedFact, noise_hook, sites_for


def _restore(rows: Tensor, pos: Tensor, clean: Tensor) -> Callable[..., Tensor]:
    def restore(act: Tensor, site: str) -> Tensor:
        out = act.clone()
        out[rows, pos] = clean[pos].to(device=act.device, dtype=act.dtype)
        return out

    return restore


def exact_grid_nnsight(lm: LoadedModel, prep: PreparedFact, corr: Corrupted, kinds: Sequence[str], window: int,
                       reporter: Reporter, rows_per_batch: int = 512) -> dict[str, Tensor]:
    """Mean p(target) with each (kind, layer, position) cell restored, {kind: (n_layers, pos)}: the
    numbers of :func:`neurotrace.lab.tracing.grid.exact_grid`, every forward run by nnsight."""
    n_layers, n_pos, samples = lm.n_layers, len(prep.ids), corr.samples
    cells = [(k, layer, p) for k in kinds for layer in range(n_layers) for p in range(n_pos)]
    needed = sorted({s for k, layer, _ in cells for s in sites_for(k, layer, window, n_layers)})
    clean = traced_states(lm, prep.ids, needed)
    out = torch.empty(len(cells) * samples)
    for start in range(0, len(out), rows_per_batch):
        rows = torch.arange(start, min(start + rows_per_batch, len(out)))
        cell_idx, sample_idx = rows // samples, rows % samples
        by_site: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for r, c in enumerate(cell_idx.tolist()):
            kind, layer, pos = cells[c]
            for site in sites_for(kind, layer, window, n_layers):
                by_site[site].append((r, pos))
        hooks: dict[str, list] = {s: [_restore(torch.tensor([a for a, _ in v]), torch.tensor([b for _, b in v]),
                                               clean[s])] for s, v in by_site.items()}
        if corr.noise is not None:
            hooks["hook_embed"] = [noise_hook(corr.noise[sample_idx], corr.subject)]
        ids = corr.ids[None].expand(len(rows), -1)
        out[rows] = traced_probs(lm, ids, prep.predict_pos, prep.target_id, hooks).cpu()
        reporter.step(start + len(rows), len(out), f"fact {prep.fact.id or prep.fact.clean_subject} (nnsight)")
    grid = out.view(len(cells), samples).mean(1).view(len(kinds), n_layers, n_pos)
    return {k: grid[i] for i, k in enumerate(kinds)}
