"""Influence, pruning and the graph scores, as circuit-tracer defines them (Ameisen et al. 2025, methods).

With ``A`` the adjacency (rows = targets, columns = sources) and ``|A|`` row-normalised to ``N``, a node's
*influence* on the logits is ``w (N + N^2 + N^3 + ...)`` where ``w`` puts each logit's probability on its
row (a sum that ends because the graph is acyclic). Pruning keeps the nodes holding ``node_threshold`` of
the total influence (tokens and logits always), then the edges holding ``edge_threshold`` of the edge
scores ``N[t, s] (influence_t + w_t)`` of the node-pruned graph, then drops, until nothing changes, feature
and error nodes left without an outgoing edge and features without an incoming one.

*Replacement score*: the share of the tokens' and errors' influence that the tokens hold (1: the logits
are explained by features and tokens alone). *Completeness score*: the influence-weighted share of each
node's normalised input that does not come from error nodes.
"""

from dataclasses import dataclass

import torch
from torch import Tensor


def normalize(matrix: Tensor) -> Tensor:
    m = matrix.abs()
    return m / m.sum(dim=1, keepdim=True).clamp(min=1e-10)


def influence(normalized: Tensor, weights: Tensor, max_iter: int = 1000) -> Tensor:
    """``weights @ (N + N^2 + ...)`` by repeated products (stops when a product is all zero)."""
    current = weights @ normalized
    total = current.clone()
    for _ in range(max_iter):
        if not current.any():
            return total
        current = current @ normalized
        total += current
    raise RuntimeError("influence did not converge: the adjacency has a cycle")


def threshold_of(scores: Tensor, share: float) -> Tensor:
    """The score above which the largest (non-negative) scores hold ``share`` of their total. Only the
    positive scores are sorted (a pruned graph's edge scores are nearly all zero); where ``share`` is not
    reached before them the threshold is the first zero, as over the whole sorted list."""
    positive = scores[scores > 0]
    if len(positive) == len(scores) or len(positive) == 0:
        positive = scores
    ordered = torch.sort(positive, descending=True).values
    cumulative = torch.cumsum(ordered, 0) / ordered.sum()
    at = int(torch.searchsorted(cumulative, share))
    if at >= len(ordered) and len(ordered) < len(scores):
        return torch.zeros((), dtype=scores.dtype)
    return ordered[min(at, len(ordered) - 1)]


@dataclass
class Pruned:
    node_mask: Tensor        # (n_nodes,) bool
    edge_mask: Tensor        # (n_nodes, n_nodes) bool, [target, source]
    cumulative: Tensor       # (n_nodes,) each node's cumulative influence share in influence order
    node_influence: Tensor   # (n_nodes,)


def logit_weights(n_nodes: int, probs: Tensor) -> Tensor:
    w = torch.zeros(n_nodes)
    w[n_nodes - len(probs):] = probs.float()
    return w


def prune(adjacency: Tensor, probs: Tensor, n_features: int, n_tokens: int, node_threshold: float = 0.8,
          edge_threshold: float = 0.98) -> Pruned:
    n_logits = len(probs)
    w = logit_weights(adjacency.shape[0], probs)
    node_inf = influence(normalize(adjacency), w)
    keep = node_inf >= threshold_of(node_inf, node_threshold)
    keep[-n_logits - n_tokens:] = True
    pruned = adjacency.clone()
    pruned[~keep] = 0
    pruned[:, ~keep] = 0
    norm = normalize(pruned)
    edge_scores = norm * (influence(norm, w) + w)[:, None]
    edges = edge_scores >= threshold_of(edge_scores.flatten(), edge_threshold)
    inner = slice(0, adjacency.shape[0] - n_logits - n_tokens)
    before = keep.clone()
    keep[inner] &= edges[:, inner].any(0)                  # features and errors need an outgoing edge
    keep[:n_features] &= edges[:n_features].any(1)         # features need an incoming edge
    while not torch.equal(keep, before):
        before = keep.clone()
        edges[~keep] = False
        edges[:, ~keep] = False
        keep[inner] &= edges[:, inner].any(0)
        keep[:n_features] &= edges[:n_features].any(1)
    order = torch.argsort(node_inf, descending=True)
    cumulative = torch.zeros_like(node_inf)
    cumulative[order] = torch.cumsum(node_inf[order], 0) / node_inf.sum()
    return Pruned(keep, edges, cumulative, node_inf)


def scores(adjacency: Tensor, probs: Tensor, n_features: int, n_errors: int, n_tokens: int) -> tuple[float, float]:
    """(replacement score, completeness score) of the unpruned graph."""
    w = logit_weights(adjacency.shape[0], probs)
    norm = normalize(adjacency)
    inf = influence(norm, w)
    err = slice(n_features, n_features + n_errors)
    tok = slice(n_features + n_errors, n_features + n_errors + n_tokens)
    token_inf, error_inf = inf[tok].sum(), inf[err].sum()
    replacement = float(token_inf / (token_inf + error_inf).clamp(min=1e-30))
    non_error = 1 - norm[:, err].sum(-1)
    out = inf + w
    return replacement, float((non_error * out).sum() / out.sum())
