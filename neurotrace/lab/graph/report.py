"""graph results into the run: the circuit-tracer graph file, the adjacency, tables, the interactive view,
the check figure, and an agent-sized summary (top paths from input tokens to the target)."""

import json
from collections.abc import Callable
from typing import Any

import torch

from neurotrace.lab.graph.attribute import AttributionGraph
from neurotrace.lab.graph.export import circuit_tracer_json, kept_nodes, label, top_paths
from neurotrace.lab.graph.figures import FIGURES
from neurotrace.lab.graph.prune import Pruned
from neurotrace.lab.graph.replacement.transcoders import TranscoderSet
from neurotrace.lab.graph.schema import (
    GRAPH_FILE,
    RESULTS_FILE,
    GraphChecks,
    GraphRequest,
    GraphResult,
    GraphResults,
)
from neurotrace.lab.graph.view import render_view
from neurotrace.lab.model.weights.loading import LoadedModel

TOP_PATHS = 5


def feature_call(tcs: TranscoderSet, model: str):
    """How a node's details name the call that opens a feature's page (the features tool)."""
    def call(layer: int, feature: int) -> str:
        ref = tcs.refs.get(layer)
        if ref is None:
            return "none: these transcoders are not dictionary references (use transcoders kind 'dictionary')"
        return json.dumps({"tool": "features", "request": {"dictionary": ref, "model": model, "features": [feature]}})
    return call


def _summary(rec: GraphResults) -> str:
    text = (f"Attribution graph of {rec.targets[0]!r} (p={rec.target_probabilities[0]:.2f}) after {rec.prompt!r} "
            f"in {rec.model}: {rec.n_active_features:,} active transcoder features ({rec.n_feature_nodes:,} "
            f"attributed); pruning keeps {rec.n_nodes_kept} nodes and {rec.n_edges_kept} edges holding "
            f"{rec.kept_influence_share:.0%} of the influence. Replacement score {rec.replacement_score:.2f}, "
            f"completeness {rec.completeness_score:.2f}. The target's centred logit {rec.target_logit:.3g} = direct "
            f"effects {rec.direct_effect_sum:.3g} + constant {rec.constant:.3g}.")
    if rec.paths:
        text += " Top paths: " + "; ".join(f"{' -> '.join(p.nodes)} ({p.score:.2g})" for p in rec.paths[:3]) + "."
    c = rec.checks
    if c:
        r_top = "n/a" if c.correlation_top is None else f"{c.correlation_top:.2f}"
        r_rnd = "n/a" if c.correlation_random is None else f"{c.correlation_random:.2f}"
        rnd = "" if c.mean_abs_actual_random is None else f", random features {c.mean_abs_actual_random:.3g}"
        text += (f" Checks ({c.intervention}): predicted vs actual target-logit change r={r_top} over the top "
                 f"features (random control r={r_rnd}); mean |actual| top {c.mean_abs_actual_top:.3g}{rnd}.")
    return text


def write_report(run: Any, request: GraphRequest, lm: LoadedModel, g: AttributionGraph, tcs: TranscoderSet,
                 pruned: Pruned, graph_scores: tuple[float, float],
                 run_checks: Callable[[dict[int, str]], GraphChecks | None]) -> GraphResult:
    tokens = [lm.tokenizer.decode([t]) for t in g.ids.tolist()]
    logit_tokens = [lm.tokenizer.decode([t]) for t in g.logit_ids.tolist()]
    n = len(g.adjacency)
    labels = {i: label(g, i, tokens, logit_tokens, tcs.names) for i in range(n)}
    nodes = kept_nodes(g, pruned, tokens, logit_tokens, tcs.names)
    paths = top_paths(g, pruned, labels, TOP_PATHS)
    checks = run_checks(labels)
    logit0 = n - len(g.logit_ids)
    target_logit = float(g.logits[g.logit_ids[0]] - g.logits.mean())
    direct = float(g.adjacency[logit0].sum())
    kept_direct = float((g.adjacency[logit0] * pruned.node_mask).sum())
    inf = pruned.node_influence
    rec = GraphResults(model=request.model, prompt=request.prompt, prompt_tokens=tokens,
                       transcoders=f"{tcs.source} (sha256 {tcs.sha256[:12]})", targets=logit_tokens,
                       target_probabilities=g.logit_probs.tolist(), target_logit=target_logit,
                       direct_effect_sum=direct, constant=target_logit - direct, n_active_features=len(g.srcs.value),
                       n_feature_nodes=g.n_features, n_nodes_kept=int(pruned.node_mask.sum()),
                       n_edges_kept=int(pruned.edge_mask.sum()), replacement_score=graph_scores[0],
                       completeness_score=graph_scores[1],
                       kept_influence_share=float(inf[pruned.node_mask].sum() / inf.sum().clamp(min=1e-30)),
                       kept_direct_share=kept_direct / direct if direct else 0.0, nodes=nodes, paths=paths,
                       checks=checks)
    run.write_json(RESULTS_FILE, rec.model_dump(mode="json"))
    graph_json = circuit_tracer_json(g, pruned, run.run_id, f"neurotrace-{tcs.sha256[:12]}", tokens, logit_tokens,
                                     request.prompt, request.node_threshold)
    run.write_json(GRAPH_FILE, graph_json)
    run.write_tensors("arrays/graph.safetensors", {
        "adjacency": g.adjacency.contiguous(), "node_mask": pruned.node_mask, "edge_mask": pruned.edge_mask,
        "active_features": torch.stack([g.srcs.layer, g.srcs.pos, g.srcs.index], 1).contiguous(),
        "activation_values": g.srcs.value.contiguous(), "selected_features": g.selected.contiguous(),
        "input_tokens": g.ids.contiguous(), "logit_ids": g.logit_ids.contiguous(),
        "logit_probabilities": g.logit_probs.contiguous()})
    run.write_csv("tables/nodes.csv", [{k: v for k, v in node.model_dump().items()} for node in nodes])
    if checks:
        run.write_csv("tables/checks.csv", [r.model_dump() for r in checks.rows])
    view_nodes = [node.model_dump() for node in nodes]
    run.write_text("views/graph.html", render_view(f"{request.model}: {rec.targets[0]!r} after {request.prompt!r}",
                                                   view_nodes, graph_json["links"], tokens, g.n_layers,
                                                   feature_call(tcs, request.model)))
    figures = [run.write_figure(f"figures/{name}.png", fn(rec)) for name, fn in FIGURES.items()] if checks else []
    summary = _summary(rec)
    run.set_summary(summary)
    nxt = (f"Open report.html for the interactive graph; load {GRAPH_FILE} in Neuronpedia's graph viewer; call "
           "intervene or steer on the top features to test them further.")
    return GraphResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures, next=nxt,
                       model=request.model, targets=logit_tokens, replacement_score=graph_scores[0],
                       completeness_score=graph_scores[1], kept_influence_share=rec.kept_influence_share,
                       n_nodes_kept=rec.n_nodes_kept, n_edges_kept=rec.n_edges_kept, top_nodes=nodes[:12],
                       paths=paths, checks=checks)
