"""graph equals the real circuit-tracer 0.5.0: adjacency, active and selected features, logit nodes, pruned
nodes and edges, scores and the graph file, on the golden graphs scripts/circuit_tracer_golden.py wrote
(a tiny GPT-2 with random LayerNorms, random JumpReLU transcoders, one set with skip connections and a
feature budget that exercises the influence-ordered queue, one fixed target)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from neurotrace.lab.graph.attribute import build_graph
from neurotrace.lab.graph.export import circuit_tracer_json
from neurotrace.lab.graph.prune import prune, scores
from neurotrace.lab.graph.replacement.transcoders import load_transcoders
from neurotrace.lab.model.weights.loading import ModelRef, load

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "circuit_tracer"
INDEX = json.loads((GOLDEN / "index.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def lm():
    return load(ModelRef(model=str(GOLDEN / "model")))


def _ours(lm, name):
    case, gold = INDEX["cases"][name], load_file(str(GOLDEN / f"graph_{name}.safetensors"))
    tcs = load_transcoders(GOLDEN / case["transcoders"], case["transcoders"])
    targets = None if case["target"] is None else [int(gold["logit_ids"][0])]
    g = build_graph(lm, gold["input_tokens"], tcs, targets, max_n_logits=case["max_n_logits"],
                    desired_logit_prob=case["desired_logit_prob"], batch_size=16,
                    max_feature_nodes=case["max_feature_nodes"])
    return case, gold, g


@pytest.mark.parametrize("name", sorted(INDEX["cases"]))
def test_adjacency_and_pruned_graph_equal_circuit_tracers(lm, name):
    case, gold, g = _ours(lm, name)
    active = torch.stack([g.srcs.layer, g.srcs.pos, g.srcs.index], 1)
    assert torch.equal(active, gold["active_features"])
    torch.testing.assert_close(g.srcs.value, gold["activation_values"], rtol=1e-4, atol=1e-5)
    assert torch.equal(g.selected, gold["selected_features"])
    assert torch.equal(g.logit_ids, gold["logit_ids"])
    torch.testing.assert_close(g.logit_probs, gold["logit_probabilities"], rtol=1e-4, atol=1e-6)
    scale = float(gold["adjacency"].abs().max())
    torch.testing.assert_close(g.adjacency, gold["adjacency"], rtol=1e-4, atol=1e-5 * scale)
    pruned = prune(g.adjacency, g.logit_probs, g.n_features, g.n_pos)
    assert torch.equal(pruned.node_mask, gold["node_mask"]) and torch.equal(pruned.edge_mask, gold["edge_mask"])
    torch.testing.assert_close(pruned.cumulative, gold["cumulative"], rtol=1e-4, atol=1e-5)
    replacement, completeness = scores(g.adjacency, g.logit_probs, g.n_features, g.n_errors, g.n_pos)
    assert replacement == pytest.approx(case["replacement_score"], abs=1e-4)
    assert completeness == pytest.approx(case["completeness_score"], abs=1e-4)


def test_graph_file_equals_what_create_graph_files_writes(lm):
    _, gold, g = _ours(lm, "relu_all")
    theirs = json.loads((GOLDEN / "relu_all.json").read_text(encoding="utf-8"))
    pruned = prune(g.adjacency, g.logit_probs, g.n_features, g.n_pos)
    tokens = [lm.tokenizer.decode([t]) for t in g.ids.tolist()]
    logit_tokens = [lm.tokenizer.decode([t]) for t in g.logit_ids.tolist()]
    ours = circuit_tracer_json(g, pruned, "relu_all", theirs["metadata"]["scan"], tokens, logit_tokens,
                               theirs["metadata"]["prompt"], 0.8)
    assert ours["metadata"].keys() == theirs["metadata"].keys() and ours["qParams"] == theirs["qParams"]
    assert ours["metadata"]["prompt_tokens"] == theirs["metadata"]["prompt_tokens"]
    by_id = {n["node_id"]: n for n in theirs["nodes"]}
    assert {n["node_id"] for n in ours["nodes"]} == set(by_id)
    for node in ours["nodes"]:
        other = by_id[node["node_id"]]
        assert node.keys() == other.keys()
        for key, value in node.items():
            if isinstance(value, float):
                assert value == pytest.approx(other[key], rel=1e-4, abs=1e-5), key
            else:
                assert value == other[key], key
    links = {(x["source"], x["target"]): x["weight"] for x in theirs["links"]}
    assert {(x["source"], x["target"]) for x in ours["links"]} == set(links)
    for x in ours["links"]:
        assert x["weight"] == pytest.approx(links[(x["source"], x["target"])], rel=1e-4, abs=1e-4)
