"""The exact causal-tracing grid with every forward run through nnsight (``backend='nnsight'``).

The same rows, restorations and noise as :func:`neurotrace.lab.tracing.grid.exact_grid`'s batched full
forward; the hooks are realised by :func:`neurotrace.lab.model.nnsight_backend.traced_probs`, so the
numbers equal the hf backend's and the same code can run on NDIF.
"""

from collections.abc import Sequence

from torch import Tensor

from neurotrace.lab.model.loading import LoadedModel
from neurotrace.lab.model.nnsight_backend import traced_probs, traced_states
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.grid import Corrupted, restored_grid, restored_sites
from neurotrace.lab.tracing.prepare import PreparedFact


def exact_grid_nnsight(lm: LoadedModel, prep: PreparedFact, corr: Corrupted, components: Sequence[str], window: int,
                       reporter: Reporter, rows_per_batch: int = 512) -> dict[str, Tensor]:
    """Mean p(target) with each (component, layer, position) cell restored, {component: (n_layers, pos)}: the
    numbers of :func:`neurotrace.lab.tracing.grid.exact_grid`, every forward run by nnsight."""
    clean = traced_states(lm, prep.ids, restored_sites(lm, components, window))
    return restored_grid(lm, prep, corr, components, window, clean, traced_probs, reporter, rows_per_batch,
                         (0, corr.samples * len(components) * lm.n_layers * len(prep.ids)), tag=" (nnsight)")
