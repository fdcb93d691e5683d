"""Build the attribution graph of one prompt: circuit-tracer's phases on the local replacement model.

0. the real forward: logits, each MLP's input and output, token embeddings -> active features, errors;
1. one frozen, MLP-cut forward on ``batch_size`` copies of the prompt (:mod:`.replacement`);
2. logit rows: each target logit's demeaned unembedding row injected at the final norm's output, last position;
3. feature rows: each feature's encoder row injected at its MLP input. With ``max_feature_nodes`` below the
   number of active features, features are visited in order of their influence on the logits so far
   (recomputed every ``update_interval`` batches), as circuit-tracer does, and the rest are left out.

The adjacency is square over [selected features, errors (layer-major), tokens, logits]; rows of errors and
tokens are zero (they have no inputs).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.graph.prune import influence, logit_weights
from neurotrace.lab.graph.replacement.forward import (
    Sources,
    backward_rows,
    real_forward,
    replacement_forward,
    sources,
)
from neurotrace.lab.graph.replacement.transcoders import TranscoderSet
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import NULL_REPORTER, Reporter


@dataclass
class AttributionGraph:
    ids: Tensor                 # (n_pos,) prompt token ids (with the leading special token)
    srcs: Sources               # every active feature, the errors, the token vectors
    selected: Tensor            # (n_selected,) indices into the active features, in node order
    adjacency: Tensor           # (n_nodes, n_nodes) [target, source]
    logit_ids: Tensor           # (k,) target token ids
    logit_probs: Tensor         # (k,) their probabilities
    logit_vectors: Tensor       # (k, d) demeaned unembedding rows
    logits: Tensor              # (vocab,) the real model's logits at the last position
    n_layers: int

    @property
    def n_pos(self) -> int:
        return len(self.ids)

    @property
    def n_features(self) -> int:
        return len(self.selected)

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_pos


def unembedding(lm: LoadedModel) -> Tensor:
    """W_U (vocab, d) of a causal LM whose head is one linear map."""
    head = lm.adapter.head or (lm.adapter.unembed,)
    weight = getattr(lm.adapter.module(lm.model, head[-1]), "weight", None)
    if lm.lm_kind != "causal" or len(head) != 1 or weight is None or weight.shape[-1] != lm.d_model:
        raise InputError("model", f"{lm.ref.model}'s head is not a single unembedding matrix",
                         fix="graph needs a causal LM whose logits are final_norm(x) @ W_U")
    return weight.detach().float()


def target_logits(logits: Tensor, w_u: Tensor, targets: list[int] | None, max_n_logits: int,
                  desired_logit_prob: float) -> tuple[Tensor, Tensor, Tensor]:
    """(ids, probabilities, demeaned unembedding rows) of the logit nodes: the given targets, else the most
    likely tokens until their probability reaches ``desired_logit_prob`` (at most ``max_n_logits``)."""
    probs = torch.softmax(logits.float(), -1)
    if targets:
        idx = torch.tensor(targets)
    else:
        top_p, top_i = torch.topk(probs, max_n_logits)
        idx = top_i[: int(torch.searchsorted(torch.cumsum(top_p, 0), desired_logit_prob)) + 1]
    return idx, probs[idx], w_u[idx] - w_u.mean(0, keepdim=True)


def build_graph(lm: LoadedModel, ids: Tensor, tcs: TranscoderSet, targets: list[int] | None, *,
                max_n_logits: int = 10, desired_logit_prob: float = 0.95, max_feature_nodes: int | None = None,
                batch_size: int = 64, update_interval: int = 4, zero_positions: int = 1,
                reporter: Reporter = NULL_REPORTER, real: tuple | None = None) -> AttributionGraph:
    """``real``: :func:`real_forward`'s result on ``ids`` when the caller has it already."""
    logits, mlp_in, mlp_out, embed = real if real is not None else real_forward(lm, ids)
    srcs = sources(tcs, mlp_in, mlp_out, embed, zero_positions)
    idx, probs, vectors = target_logits(logits, unembedding(lm), targets, max_n_logits, desired_logit_prob)
    n_active, n_pos, n_layers, k = len(srcs.value), len(ids), lm.n_layers, len(idx)
    offset = n_active + (n_layers + 1) * n_pos                       # logit columns start here
    budget = min(max_feature_nodes or n_active, n_active)
    rows = torch.zeros(budget + k, offset)
    row_node = torch.zeros(budget + k, dtype=torch.long)
    sums = torch.zeros(budget + k)                                    # |row| sums, for the influence
    row_layer = torch.full((budget + k,), n_layers)                  # logit rows: after every layer
    batch = max(1, min(batch_size, max(budget, k)))
    done_batches, total_batches = 0, -(-k // batch) + -(-budget // batch)
    with replacement_forward(lm, ids, tcs, batch) as g:
        for start in range(0, k, batch):
            sl = slice(start, min(k, start + batch))
            n = sl.stop - sl.start
            rows[sl] = backward_rows(g, torch.full((n,), n_layers), torch.full((n,), n_pos - 1), vectors[sl], srcs)
            row_node[sl] = torch.arange(sl.start, sl.stop) + offset
            sums[sl] = rows[sl].abs().sum(1)
            done_batches += 1
            reporter.step(done_batches, total_batches, "logit rows")
        visited = torch.zeros(n_active, dtype=torch.bool)
        filled = k
        while filled - k < budget:
            if budget == n_active:
                pending = torch.arange(n_active)
            else:
                inf = partial_influence(rows[:filled], probs, row_node[:filled], row_layer[:filled], offset + k,
                                        sums[:filled])
                order = torch.argsort(inf[:n_active], descending=True)
                pending = order[~visited[order]][: min(update_interval * batch, budget - (filled - k))]
            pending = pending[torch.argsort(srcs.layer[pending], stable=True)]   # same rows, shallower backwards
            for start in range(0, len(pending), batch):
                chunk = pending[start:start + batch]
                rows[filled:filled + len(chunk)] = backward_rows(g, srcs.layer[chunk], srcs.pos[chunk],
                                                                 srcs.encoder[chunk], srcs)
                row_node[filled:filled + len(chunk)] = chunk
                row_layer[filled:filled + len(chunk)] = srcs.layer[chunk]
                sums[filled:filled + len(chunk)] = rows[filled:filled + len(chunk)].abs().sum(1)
                visited[chunk] = True
                filled += len(chunk)
                done_batches += 1
                reporter.step(done_batches, total_batches, "feature rows")
    selected = torch.where(visited)[0]
    n_nodes = budget + (n_layers + 1) * n_pos + k
    keep_cols = torch.cat([selected, torch.arange(n_active, offset)])
    adjacency = torch.zeros(n_nodes, n_nodes)
    in_order = k + torch.argsort(row_node[k:])                         # feature rows in active-feature order
    adjacency[:budget, : budget + (n_layers + 1) * n_pos] = rows[in_order[:, None], keep_cols]
    adjacency[-k:, : budget + (n_layers + 1) * n_pos] = rows[:k][:, keep_cols]
    return AttributionGraph(ids, srcs, selected, adjacency, idx, probs, vectors, logits, n_layers)


def partial_influence(rows: Tensor, probs: Tensor, row_node: Tensor, row_layer: Tensor, n_nodes: int,
                      sums: Tensor | None = None, chunk: int = 1024) -> Tensor:
    """Influence on the logits of every node, from the rows computed so far: ``w (N + N^2 + ...)`` over the
    row-normalised ``|rows|`` (``row_layer``: each row's layer, logits last; ``sums``: the rows' absolute
    sums, when the caller keeps them).

    Influence passes on only through nodes that have a row, so it is first solved on the square
    ``(rows, rows)`` block ``S``: ``r = v + r S`` (``v``: the logit probabilities). A feature reads only
    earlier layers, so ``S`` is strictly lower triangular with the rows in layer order and ``r (I - S) = v``
    is one triangular solve (the sum of the powers, without iterating). One product ``r N`` spreads it over
    every node. ``|rows|`` is read in ``chunk``-row blocks, so no full-size copy is made."""
    n_rows, n_cols = rows.shape
    if sums is None:
        sums = torch.cat([rows[a:a + chunk].abs().sum(1) for a in range(0, n_rows, chunk)])
    inv = 1 / sums.clamp(min=1e-10)
    order = torch.argsort(row_layer, stable=True)
    node = row_node[order]
    has_col = node < n_cols                                               # logit nodes have no column
    system = torch.zeros(n_rows, n_rows)
    system[:, has_col] = rows[order[:, None], node[has_col][None, :]].abs() * -inv[order][:, None]
    system.diagonal().add_(1)                                             # I - S
    v = logit_weights(n_nodes, probs)[node]
    reach = torch.linalg.solve_triangular(system, v[None], upper=False, left=False)[0]
    weight = torch.zeros(n_rows)
    weight[order] = reach * inv[order]
    total = torch.zeros(n_nodes)
    for a in range(0, n_rows, chunk):
        total[:n_cols] += weight[a:a + chunk] @ rows[a:a + chunk].abs()
    return total


__all__ = ["AttributionGraph", "build_graph", "influence", "target_logits", "unembedding"]
