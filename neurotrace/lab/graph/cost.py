"""The graph job's size once the active features are known (the pre-work estimate is
:func:`neurotrace.lab.estimates.graph`, which assumes an L0 per layer and position).

The bytes are the retained forward graph of ``batch_size`` prompt copies (the activations a backward pass
re-reads per layer and position), the rows computed (``(max_feature_nodes + logits) x (active features +
errors + tokens)``), the square adjacency and its pruning copies, and the transcoders' weights. After the
real forward the same sum with the true count of active features is checked again, so a prompt or a
transcoder set that fires far more features than assumed is refused before the backward passes.
"""

from typing import Any

from neurotrace.lab.estimates import graph_bytes


def exact_bytes(request: Any, n_layers: int, d_model: int, d_mlp: int, n_heads: int, pos: int, n_active: int,
                n_logits: int, width: int) -> int:
    budget = min(request.max_feature_nodes or n_active, n_active)
    return graph_bytes(n_layers, d_model, d_mlp, n_heads, pos, min(request.batch_size, max(budget, n_logits)),
                       budget, n_active, n_logits, width)
