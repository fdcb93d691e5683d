"""Does the graph predict interventions? Compare, per feature, the target-logit change the graph predicts
with the real model's change when the feature is ablated (its output removed) or steered (its activation
times ``factor``).

*Predicted*: a change ``c a_s`` of feature ``s``'s activation (``c = -1`` ablates, ``factor - 1`` steers)
changes every node's input by ``c A[:, s]``; a downstream feature passes its change on at ``A[:, f] / a_f``
per unit (linear, as if it stays active), so the changes solve ``d = c A[:, s] + M d`` with
``M[:, f] = A[:, f] / a_f`` on feature columns (errors and tokens do not move). *Actual*: the real model with
``c a_s W_dec[s]`` added to layer ``l_s``'s MLP output at the feature's position, everything downstream
recomputed (attention, norms, real MLPs). The top features are the most influential feature nodes; the
control is drawn at random from the other feature nodes (seeded).
"""

import numpy as np
import torch
from torch import Tensor

from neurotrace.lab.graph.attribute import AttributionGraph
from neurotrace.lab.graph.replacement.transcoders import TranscoderSet
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.seeding import make_generator


def predicted(g: AttributionGraph, nodes: list[int], c: float, max_iter: int = 10_000) -> Tensor:
    """Predicted change of the first target logit for changing each feature node in ``nodes`` by ``c a_s``.

    The changes solve ``d = c A[:, s] + M d``; only the first logit's entry is wanted, so the adjoint
    ``y = u + M^T y`` (``u``: that logit's unit vector) is summed instead (``M`` is nilpotent: the graph is
    acyclic), in float64, one vector-matrix product per step: ``d_logit = y . c A[:, s]`` for every ``s`` at once."""
    n, nf = len(g.adjacency), g.n_features
    scale = 1 / g.srcs.value[g.selected].double().clamp(min=1e-12)
    features = g.adjacency[:, :nf]
    z = torch.zeros(n, dtype=torch.float64)
    z[n - len(g.logit_ids)] = 1.0
    y = z.clone()
    for _ in range(max_iter):
        step = (z.float() @ features).double() * scale          # float32 products, float64 sums
        if not step.any():
            break
        z = torch.cat([step, torch.zeros(n - nf, dtype=torch.float64)])
        y += z
    else:
        raise RuntimeError("the graph has a cycle: the predicted effects do not converge")
    return (c * (y @ g.adjacency[:, nodes].double())).float()


@torch.no_grad()
def actual(lm: LoadedModel, g: AttributionGraph, tcs: TranscoderSet, nodes: list[int], c: float) -> Tensor:
    """The real model's change of the first target's (logit - mean logit) per intervention (one row each)."""
    k = len(nodes)
    active = g.selected[nodes]
    deltas: dict[int, Tensor] = {}
    for row, a in enumerate(active.tolist()):
        layer, pos, feat = int(g.srcs.layer[a]), int(g.srcs.pos[a]), int(g.srcs.index[a])
        delta = deltas.setdefault(layer, torch.zeros(k + 1, g.n_pos, lm.d_model))
        delta[row + 1, pos] = c * float(g.srcs.value[a]) * tcs.layers[layer].W_dec[feat]

    def add(layer: int):
        def hook(_m, _a, out):
            if isinstance(out, tuple):
                return (out[0] + deltas[layer].to(out[0].dtype), *out[1:])
            return out + deltas[layer].to(out.dtype)
        return hook

    handles = [lm.adapter.module(lm.model, lm.adapter.mlp_out, layer).register_forward_hook(add(layer))
               for layer in deltas]
    try:
        ids = g.ids[None].expand(k + 1, -1).to(lm.device)
        body = lm.adapter.module(lm.model, lm.adapter.base)
        hidden = body(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[:, -1]
        logits = lm.adapter.logits_at(lm.model, hidden).float().cpu()          # (k + 1, vocab): last position only
    finally:
        for h in handles:
            h.remove()
    metric = logits[:, int(g.logit_ids[0])] - logits.mean(-1)
    return metric[1:] - metric[0]


def pearson(x: Tensor, y: Tensor) -> float | None:
    if len(x) < 3 or float(x.std()) == 0 or float(y.std()) == 0:
        return None
    return float(np.corrcoef(x.numpy(), y.numpy())[0, 1])


def choose(g: AttributionGraph, node_influence: Tensor, n_top: int, n_random: int, seed: int
           ) -> tuple[list[int], list[int]]:
    """(top feature nodes by influence, random other feature nodes)."""
    order = torch.argsort(node_influence[: g.n_features], descending=True).tolist()
    top, rest = order[:n_top], order[n_top:]
    pick = torch.randperm(len(rest), generator=make_generator(seed))[:n_random].tolist()
    return top, [rest[i] for i in pick]
