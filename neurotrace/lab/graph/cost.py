"""The graph job's size: before any work (:func:`graph_estimate`, ``GraphRequest.cost``), assuming an L0 per
layer and position, and again once the active features are known (:func:`exact_bytes`).

The bytes are the retained forward graph of ``batch_size`` prompt copies (the activations a backward pass
re-reads per layer and position), the rows computed (``(max_feature_nodes + logits) x (active features +
errors + tokens)``), the square adjacency and its pruning copies, and the transcoders' weights. Positions are
bounded by the prompt's characters (+ the special token). After the real forward the same sum with the true
count of active features is checked again, so a prompt or a transcoder set that fires far more features than
assumed is refused before the backward passes.
"""

from typing import Any

from neurotrace.lab.jobs import BYTES, Estimate, dims_of, positions

L0_GUESS = 64             # active features per layer and position assumed before the transcoders run
MAX_N_LOGITS = 10         # circuit-tracer's default number of logit nodes


def graph_bytes(n_layers: int, d_model: int, d_mlp: int, n_heads: int, pos: int, batch: int, budget: int,
                n_active: int, n_logits: int, width: int) -> int:
    forward = batch * pos * n_layers * (16 * d_model + 3 * d_mlp + 2 * n_heads * pos) * BYTES
    rows = (budget + n_logits) * (n_active + (n_layers + 1) * pos) * BYTES
    grads = batch * pos * (n_layers + 2) * d_model * BYTES * 2 + batch * n_active * BYTES   # one backward's reads
    nodes = budget + (n_layers + 1) * pos + n_logits
    return forward + rows + grads + 4 * nodes * nodes * BYTES + n_layers * width * d_model * 2 * BYTES


def graph_estimate(request: Any, lab: Any) -> Estimate:
    d = dims_of(lab, request.model)
    pos = positions(d, [request.prompt], extra=1)
    n_active = d.n_layers * pos * getattr(request.transcoders, "l0", L0_GUESS)
    budget = min(request.max_feature_nodes or n_active, n_active)
    n_logits = 1 if request.target else MAX_N_LOGITS
    width = getattr(request.transcoders, "width_multiple", 8) * d.d_model
    need = graph_bytes(d.n_layers, d.d_model, d.d_mlp, d.n_heads, pos, request.batch_size, budget, n_active,
                       n_logits, width)
    passes = 1 + -(-budget // request.batch_size) + 2        # forward, backward batches, intervention checks
    return Estimate(passes * request.batch_size, need, ("prompt", "max_feature_nodes", "batch_size"))


def exact_bytes(request: Any, n_layers: int, d_model: int, d_mlp: int, n_heads: int, pos: int, n_active: int,
                n_logits: int, width: int) -> int:
    budget = min(request.max_feature_nodes or n_active, n_active)
    return graph_bytes(n_layers, d_model, d_mlp, n_heads, pos, min(request.batch_size, max(budget, n_logits)),
                       budget, n_active, n_logits, width)
