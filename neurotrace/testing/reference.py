"""The straightforward causal-tracing loop (ROME's algorithm), kept as the reference for tests and
benchmarks: one forward per (kind, layer, position) of a batch [clean, corrupted x samples], full
logits, restoring ``h[1:, pos] = h[0, pos]`` at the cell's sites. Slow on purpose; never batched."""

from collections.abc import Sequence

import torch

from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.tracing.forwards import sites_for
from neurotrace.lab.tracing.prepare import PreparedFact


@torch.no_grad()
def reference_cells(lm: LoadedModel, prep: PreparedFact, corr, cells: Sequence[tuple[str, int, int]],
                    window: int) -> list[float]:
    """Mean p(target) over the corrupted rows with each (kind, layer, pos) cell restored."""
    n_layers, s = lm.n_layers, corr.samples
    ids = torch.cat([prep.ids[None], corr.ids[None].expand(s, -1)])
    out = []
    for kind, layer, pos in cells:
        def add_noise(act, site):
            if corr.noise is None:
                return act
            act = act.clone()
            act[1:, corr.subject[0]:corr.subject[1]] += corr.noise
            return act

        def restore(act, site, pos=pos):
            act = act.clone()
            act[1:, pos] = act[0, pos]
            return act

        hooks = {"hook_embed": add_noise, **{x: restore for x in sites_for(kind, layer, window, n_layers)}}
        with hooked(lm.model, lm.adapter, hooks):
            logits = lm.model(input_ids=ids).logits
        out.append(float(torch.softmax(logits[1:, prep.predict_pos], -1)[:, prep.target_id].mean()))
    return out
