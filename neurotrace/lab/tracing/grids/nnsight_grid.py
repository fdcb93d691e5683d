"""The tracing grids with every forward run through nnsight (``backend='nnsight'``).

* :func:`exact_grid_nnsight`: the same rows, restorations and noise as
  :func:`neurotrace.lab.tracing.grids.grid.exact_grid`'s batched full forward; the hooks are realised by
  :func:`neurotrace.lab.model.runtime.nnsight_backend.traced_probs`, so the numbers equal the hf backend's and
  the same code can run on NDIF.
* :func:`approx_grid_nnsight`: attribution patching as :func:`neurotrace.lab.tracing.grids.grid.approx_grid`
  computes it (``(clean - corrupted) . grad`` per site, windows summed), with the forward and the
  backward inside nnsight's trace (:func:`neurotrace.lab.model.runtime.nnsight_backend.traced_gradients`), so
  only the activations and gradients at the restored sites come back.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.runtime.nnsight_backend import traced_gradients, traced_probs, traced_states
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.forwards import COMPONENT_SITE, sites_for
from neurotrace.lab.tracing.grids.grid import Corrupted, leaf_embed, restored_grid, restored_sites
from neurotrace.lab.tracing.prepare import PreparedFact


def exact_grid_nnsight(lm: LoadedModel, prep: PreparedFact, corr: Corrupted, components: Sequence[str], window: int,
                       reporter: Reporter, rows_per_batch: int = 512, progress: tuple[int, int] | None = None
                       ) -> dict[str, Tensor]:
    """Mean p(target) with each (component, layer, position) cell restored, {component: (n_layers, pos)}: the
    numbers of :func:`neurotrace.lab.tracing.grids.grid.exact_grid`, every forward run by nnsight."""
    clean = traced_states(lm, prep.ids, restored_sites(lm, components, window))
    total = (0, corr.samples * len(components) * lm.n_layers * len(prep.ids))
    return restored_grid(lm, prep, corr, components, window, clean, traced_probs, reporter, rows_per_batch,
                         progress or total, tag=" (nnsight)")


def approx_grid_nnsight(lm: LoadedModel, prep: PreparedFact, corr: Corrupted, components: Sequence[str],
                        window: int) -> dict[str, Tensor]:
    """Attribution-patching estimate of each cell's indirect effect, {component: (n_layers, pos)}: the
    numbers of :func:`neurotrace.lab.tracing.grids.grid.approx_grid`, forward and backward run by nnsight."""
    n_layers = lm.n_layers
    sites = [site_name(COMPONENT_SITE[k], layer) for k in components for layer in range(n_layers)]
    clean = traced_states(lm, prep.ids, sites)
    ids = corr.ids[None].expand(corr.samples, -1)
    acts, grads = traced_gradients(lm, ids, prep.predict_pos, prep.target_id, sites,
                                   {"hook_embed": leaf_embed(corr)})
    per_site = {s: ((clean[s][None].to(acts[s].device) - acts[s]) * grads[s]).sum(-1).mean(0).cpu() for s in sites}
    out = {}
    for k in components:
        rows = [sum(per_site[s] for s in sites_for(k, layer, window, n_layers)) for layer in range(n_layers)]
        out[k] = torch.stack(rows)
    return out
