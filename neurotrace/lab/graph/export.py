"""The graph in circuit-tracer's JSON (what ``create_graph_files`` writes and Neuronpedia's viewer reads),
the kept nodes as records, and the top paths from input tokens to the target.

Node ids follow circuit-tracer: feature ``{layer}_{feature}_{pos}``, error ``0_{layer}_{pos}``, embedding
``E_{token}_{pos}``, logit ``{n_layers + 1}_{token}_{pos}``; a feature's ``feature`` field is the Cantor pairing
of (layer, feature). Links are ``{source, target, weight}`` for every kept edge between kept nodes.
"""

import heapq
from typing import Any

import torch

from neurotrace.lab.graph.attribute import AttributionGraph
from neurotrace.lab.graph.prune import Pruned
from neurotrace.lab.graph.schema import Node, Path_


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def node_kind(g: AttributionGraph, i: int) -> tuple[str, int | None, int, int | None]:
    """(kind, layer, pos, feature or token) of node ``i``."""
    nf, ne = g.n_features, g.n_errors
    if i < nf:
        a = int(g.selected[i])
        return "feature", int(g.srcs.layer[a]), int(g.srcs.pos[a]), int(g.srcs.index[a])
    if i < nf + ne:
        layer, pos = divmod(i - nf, g.n_pos)
        return "error", layer, pos, None
    if i < nf + ne + g.n_pos:
        pos = i - nf - ne
        return "embedding", None, pos, int(g.ids[pos])
    return "logit", None, g.n_pos - 1, int(g.logit_ids[i - nf - ne - g.n_pos])


def label(g: AttributionGraph, i: int, tokens: list[str], logit_tokens: list[str],
          names: dict[tuple[int, int], str] | None = None) -> str:
    kind, layer, pos, what = node_kind(g, i)
    if kind == "feature":
        name = (names or {}).get((layer, what))
        return f"L{layer}/F{what}@{pos}" + (f" ({name[:40]})" if name else "")
    if kind == "error":
        return f"err L{layer}@{pos}"
    if kind == "embedding":
        return f"tok {tokens[pos]!r}@{pos}"
    return f"logit {logit_tokens[i - (len(g.adjacency) - len(g.logit_ids))]!r}"


def node_id(g: AttributionGraph, i: int) -> str:
    kind, layer, pos, what = node_kind(g, i)
    if kind == "feature":
        return f"{layer}_{what}_{pos}"
    if kind == "error":
        return f"0_{layer}_{pos}"
    if kind == "embedding":
        return f"E_{what}_{pos}"
    return f"{g.n_layers + 1}_{what}_{pos}"


def kept_nodes(g: AttributionGraph, pruned: Pruned, tokens: list[str], logit_tokens: list[str],
               names: dict[tuple[int, int], str] | None = None) -> list[Node]:
    out = []
    for i in pruned.node_mask.nonzero().flatten().tolist():
        kind, layer, pos, what = node_kind(g, i)
        act = float(g.srcs.value[g.selected[i]]) if kind == "feature" else None
        name = (names or {}).get((layer, what)) if kind == "feature" else None
        out.append(Node(node_id=node_id(g, i), kind=kind, layer=layer, pos=pos,  # type: ignore[arg-type]
                        feature=what if kind == "feature" else None, label=label(g, i, tokens, logit_tokens, names),
                        name=name, influence=float(pruned.node_influence[i]), activation=act))
    return sorted(out, key=lambda n: -n.influence)


def circuit_tracer_json(g: AttributionGraph, pruned: Pruned, slug: str, scan: str, tokens: list[str],
                        logit_tokens: list[str], prompt: str, node_threshold: float) -> dict[str, Any]:
    """The graph file circuit-tracer's ``create_graph_files`` writes for this graph."""
    nodes: dict[int, dict[str, Any]] = {}
    n_logit0 = len(g.adjacency) - len(g.logit_ids)
    for i in pruned.node_mask.nonzero().flatten().tolist():
        kind, layer, pos, what = node_kind(g, i)
        base = {"node_id": node_id(g, i), "ctx_idx": pos, "token_prob": 0.0, "is_target_logit": False,
                "run_idx": 0, "reverse_ctx_idx": 0, "clerp": "", "influence": float(pruned.cumulative[i]),
                "activation": None}
        if kind == "feature":
            base.update(feature=_cantor(layer, what), layer=str(layer), feature_type="cross layer transcoder",
                        jsNodeId=f"{layer}_{what}-0", activation=float(g.srcs.value[g.selected[i]]))
        elif kind == "error":
            base.update(feature=-1, layer=str(layer), feature_type="mlp reconstruction error",
                        jsNodeId=f"{layer}_{pos}-0")
        elif kind == "embedding":
            base.update(feature=pos, layer="E", feature_type="embedding", jsNodeId=f"E_{what}-{pos}")
        else:
            j = i - n_logit0
            p = float(g.logit_probs[j])
            base.update(feature=what, layer=str(g.n_layers + 1), feature_type="logit", token_prob=p,
                        is_target_logit=j == 0, jsNodeId=f"L_{what}-{pos}", clerp=f'Output "{logit_tokens[j]}" '
                        f"(p={p:.3f})", influence=None)
        nodes[i] = {k: base[k] for k in ("node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob",
                                          "is_target_logit", "run_idx", "reverse_ctx_idx", "jsNodeId", "clerp",
                                          "influence", "activation")}
    dst, src = pruned.edge_mask.nonzero(as_tuple=True)
    links = [{"source": nodes[s]["node_id"], "target": nodes[t]["node_id"], "weight": float(g.adjacency[t, s])}
             for t, s in zip(dst.tolist(), src.tolist(), strict=True) if s in nodes and t in nodes]
    used = {x for link in links for x in (link["source"], link["target"])}
    kept = [n for n in nodes.values() if n["node_id"] in used or n["feature_type"] in ("embedding", "logit")]
    meta = {"slug": slug, "scan": scan, "transcoder_list": [], "prompt_tokens": tokens, "prompt": prompt,
            "node_threshold": node_threshold, "schema_version": 1}
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": meta, "qParams": qparams, "nodes": kept, "links": links}


def top_paths(g: AttributionGraph, pruned: Pruned, labels: dict[int, str], k: int, beam: int = 256) -> list[Path_]:
    """The ``k`` best paths token -> ... -> first target logit through kept edges, a path's score being the
    product of each step's share of its target's |input| (best-first search backwards from the logit)."""
    adj = g.adjacency * pruned.edge_mask
    share = adj.abs() / adj.abs().sum(1, keepdim=True).clamp(min=1e-30)
    first_token = g.n_features + g.n_errors
    logit = len(g.adjacency) - len(g.logit_ids)
    act = torch.ones(len(g.adjacency))
    act[: g.n_features] = g.srcs.value[g.selected].abs().clamp(min=1e-12)
    heap: list[tuple[float, int, list[int], float]] = [(-1.0, 0, [logit], 1.0)]
    found: list[Path_] = []
    counter = 0
    while heap and len(found) < k:
        neg, _, path, effect = heapq.heappop(heap)
        head = path[-1]
        if first_token <= head < first_token + g.n_pos:
            found.append(Path_(nodes=[labels[i] for i in reversed(path)], score=-neg, effect=effect))
            continue
        for s in share[head].nonzero().flatten().tolist():
            counter += 1
            step = float(adj[head, s]) / float(act[s])     # per unit of the source's activation
            heapq.heappush(heap, (neg * float(share[head, s]), counter, [*path, s], effect * step))
        if len(heap) > beam:
            heap = heapq.nsmallest(beam, heap)
    return found
