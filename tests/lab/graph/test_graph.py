"""graph: the error nodes make the direct effects sum exactly to the logit (and to each feature's input), the
graph on the planted-circuit transformer finds the planted route (and a wrong-country feature stays out), the
predicted effects agree with real interventions on an embedded model and beat random features, SAELens folders
give the same graph as circuit-tracer's layout, and bad transcoders or prompts are refused by field."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from neurotrace.lab.benchmark.planted_model import (
    ATTR0,
    CAPITALS,
    COUNTRIES,
    MLP_BIAS,
    MLP_GAIN,
    build_planted,
)
from neurotrace.lab.errors import InputError
from neurotrace.lab.graph import GraphRequest, run_graph
from neurotrace.lab.graph.attribute import build_graph
from neurotrace.lab.graph.checks import actual, choose, pearson, predicted
from neurotrace.lab.graph.prune import prune
from neurotrace.lab.graph.replacement.dictionaries import dictionary_transcoders
from neurotrace.lab.graph.replacement.forward import real_forward
from neurotrace.lab.graph.replacement.transcoders import (
    Transcoder,
    TranscoderSet,
    load_transcoders,
    random_transcoders,
)
from neurotrace.lab.graph.run import prompt_ids
from neurotrace.lab.graph.schema import GRAPH_FILE, RESULTS_FILE
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.sae import load_dictionary
from neurotrace.testing.tiny import build_tiny

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "circuit_tracer"


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def _bias_free(family: str, out: Path) -> Path:
    """A tiny ``family`` model with every bias and position embedding zero and random norm weights: its frozen
    replacement model is linear (no constant), so the direct effects must add up to the logit exactly."""
    src = build_tiny(family, out / "src")
    model = AutoModelForCausalLM.from_pretrained(src)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "wpe" in name:
                p.zero_()
            elif "norm" in name or "ln" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g) + (0.0 if family.startswith("gemma") else 1.0))
    model.save_pretrained(out / "m")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, out / "m" / f)
    return out / "m"


@pytest.mark.parametrize("family,skip", [("gpt2", False), ("gpt2", True), ("llama", False), ("gemma3_text", False)])
def test_direct_effects_sum_exactly_to_the_logit_and_to_each_feature_input(tmp_path, family, skip):
    lm = load(ModelRef(model=str(_bias_free(family, tmp_path))))
    tcs = random_transcoders(lm.n_layers, lm.d_model, 64, seed=0, threshold=0.5, skip=skip)
    for t in tcs.layers:
        t.b_dec.zero_()
    ids = torch.tensor(lm.tokenizer("the capital of france is").input_ids)
    g = build_graph(lm, ids, tcs, None, batch_size=16, zero_positions=0)
    k = len(g.logit_ids)
    torch.testing.assert_close(g.adjacency[-k:].sum(1), g.logits[g.logit_ids] - g.logits.mean(), rtol=1e-4, atol=1e-4)
    a = g.selected                                               # every feature: its pre-activation less b_enc
    from_graph = g.adjacency[: g.n_features].sum(1)
    mlp_in = real_forward(lm, ids)[1]
    pre = torch.stack([g.srcs.encoder[i] @ mlp_in[int(g.srcs.layer[i])][int(g.srcs.pos[i])] for i in a])
    torch.testing.assert_close(from_graph, pre, rtol=1e-4, atol=1e-4)
    no_error = g.adjacency.clone()                               # without the errors the sum is off
    no_error[:, g.n_features: g.n_features + g.n_errors] = 0
    assert (no_error[-k:].sum(1) - g.adjacency[-k:].sum(1)).abs().max() > 1e-3


def _planted_transcoders(lm) -> TranscoderSet:
    """Exact transcoders of the planted model: layer 1 has one feature per country (the planted MLP unit: reads
    the country's dimension, bias -5, writes MLP_GAIN onto the capital's attribute direction); the other
    layers' MLPs are zero, and their transcoders never fire."""
    vocab, d, width = lm.tokenizer.get_vocab(), lm.d_model, 8
    layers = []
    for layer in range(lm.n_layers):
        enc, dec, b_enc = torch.zeros(width, d), torch.zeros(width, d), torch.full((width,), -1.0)
        if layer == 1:
            for j, country in enumerate(COUNTRIES):
                enc[j, vocab[country]] = 1.0
                dec[j, ATTR0 + j] = MLP_GAIN
                b_enc[j] = MLP_BIAS
        layers.append(Transcoder(enc, b_enc, dec, torch.zeros(d)))
    return TranscoderSet(layers, source="planted")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted(tmp_path_factory.mktemp("planted") / "planted-gpt2")


def test_graph_on_the_planted_transformer_finds_the_planted_route(planted):
    lm = load(ModelRef(model=str(planted.path)))
    tcs = _planted_transcoders(lm)
    for i, country in enumerate(COUNTRIES[:3]):
        ids = prompt_ids(lm, f"the capital of {country} is")
        target = lm.tokenizer.get_vocab()[CAPITALS[i]]
        g = build_graph(lm, ids, tcs, [target], batch_size=8)
        pruned = prune(g.adjacency, g.logit_probs, g.n_features, g.n_pos)
        feats = [(int(g.srcs.layer[a]), int(g.srcs.pos[a]), int(g.srcs.index[a])) for a in g.selected]
        subject = planted.subject_last_pos + 1                    # the special token comes first
        assert feats == [(1, subject, i)]                         # only the planted unit fires, at the subject
        f, logit = 0, len(g.adjacency) - 1
        errors = g.adjacency[logit, g.n_features: g.n_features + g.n_errors]
        assert pruned.node_mask[f] and pruned.edge_mask[logit, f]
        assert g.adjacency[logit, f] > 10 * errors.abs().max()    # the feature writes the answer, errors do not
        token = g.n_features + g.n_errors + subject
        assert pruned.edge_mask[f, token] and g.adjacency[f, token] > 0
        other = [j for j in range(len(COUNTRIES)) if j != i]      # control: no other country's feature fires
        assert not any(idx in other for _, _, idx in feats)


def test_predicted_effects_agree_with_interventions_and_beat_random_features():
    lm = load(ModelRef(model="fact-gpt2"))
    tcs = random_transcoders(lm.n_layers, lm.d_model, 8 * lm.d_model, seed=0, threshold=2.0)
    ids = prompt_ids(lm, "The capital of France is")
    g = build_graph(lm, ids, tcs, None, batch_size=128)
    pruned = prune(g.adjacency, g.logit_probs, g.n_features, g.n_pos)
    top, rnd = choose(g, pruned.node_influence, 10, 10, seed=0)
    for c in (-1.0, 1.0):                                         # ablate, steer x2
        pred, act = predicted(g, top + rnd, c), actual(lm, g, tcs, top + rnd, c)
        assert pearson(pred[:10], act[:10]) > 0.6
        assert act[:10].abs().mean() > 2 * act[10:].abs().mean()


def test_saelens_folders_give_the_same_graph_as_circuit_tracer_layout(tmp_path):
    lm = load(ModelRef(model=str(GOLDEN / "model")))
    ct = load_transcoders(GOLDEN / "transcoders_seed1", "ct")
    for layer, t in enumerate(ct.layers):
        folder = tmp_path / "sae" / f"layer_{layer}" / "width_96"
        folder.mkdir(parents=True)
        save_file({"W_enc": t.W_enc.T.contiguous(), "W_dec": t.W_dec.contiguous(), "b_enc": t.b_enc,
                   "b_dec": t.b_dec, "threshold": t.threshold}, str(folder / "sae_weights.safetensors"))
        (folder / "cfg.json").write_text(json.dumps({
            "architecture": "jumprelu_transcoder", "d_in": 32, "d_sae": 96, "d_out": 32,
            "hook_name": f"blocks.{layer}.ln2.hook_normalized", "hook_name_out": f"blocks.{layer}.hook_mlp_out"}),
            encoding="utf-8")
    sae = load_transcoders(tmp_path / "sae", "sae")
    ids = torch.tensor([0, 1, 7, 3, 10, 4])
    a, b = build_graph(lm, ids, ct, None, batch_size=16), build_graph(lm, ids, sae, None, batch_size=16)
    assert sae.in_site == "ln2.hook_normalized" and torch.equal(a.adjacency, b.adjacency)


def test_bad_transcoders_and_long_prompts_are_refused_by_field(lab, tmp_path):
    inputs = lab.store.root.parent / "inputs"
    shutil.copytree(GOLDEN / "transcoders_seed1", inputs / "tc")
    with pytest.raises(InputError) as err:                          # golden width 32, fact-gpt2 has 128
        run_graph(GraphRequest(model="fact-gpt2", prompt="The capital of France is",
                               transcoders={"kind": "folder", "path": "tc"}), lab=lab)
    assert err.value.field == "transcoders.layers"                  # 2 layers' transcoders for 6 layers
    (inputs / "tc" / "layer_1.safetensors").unlink()
    shutil.copy(GOLDEN / "transcoders_seed1" / "layer_0.safetensors", inputs / "tc" / "layer_2.safetensors")
    with pytest.raises(InputError) as err:
        run_graph(GraphRequest(model=str(GOLDEN / "model"), prompt="the city",
                               transcoders={"kind": "folder", "path": "tc"}), lab=lab)
    assert err.value.field == "transcoders.layers"                  # layers 0 and 2: a gap
    tiny = build_tiny("gpt2", tmp_path / "tiny", d_model=48, n_layers=2)
    shutil.copytree(GOLDEN / "transcoders_seed1", inputs / "tc2")
    with pytest.raises(InputError) as err:
        run_graph(GraphRequest(model=str(tiny), prompt="the city", transcoders={"kind": "folder", "path": "tc2"}),
                  lab=lab)
    assert err.value.field == "transcoders.d_in" and "48" in str(err.value)
    with pytest.raises(InputError) as err:
        run_graph(GraphRequest(model="fact-gpt2", prompt="x", transcoders={"kind": "folder", "path": "../../etc"}),
                  lab=lab)
    assert err.value.field == "transcoders.path"
    small = Lab(LabSettings(runs_dir=tmp_path / "r2", memory_budget_bytes=200 * 2**20))
    with pytest.raises(InputError) as err:
        run_graph(GraphRequest(model="fact-gpt2", prompt="the capital " * 150, transcoders={"kind": "random"}),
                  lab=small)
    assert err.value.field == "prompt" and ("GiB" in str(err.value) or "MiB" in str(err.value))


def test_run_writes_the_graph_file_view_and_checks(lab):
    result = run_graph(GraphRequest(model="fact-gpt2", prompt="The capital of France is", max_feature_nodes=128,
                                    transcoders={"kind": "random"}, check_top=4), lab=lab)
    run_dir = lab.store.run_dir(result.run_id)
    graph = json.loads((run_dir / GRAPH_FILE).read_text(encoding="utf-8"))
    assert set(graph) == {"metadata", "qParams", "nodes", "links"} and graph["links"]
    rec = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    assert rec["targets"][0] == "Paris" and rec["direct_effect_sum"] + rec["constant"] == pytest.approx(
        rec["target_logit"])
    assert len(result.checks.rows) == 8 and result.paths and result.paths[0].nodes[-1] == "logit 'Paris'"
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Interactive view" in report and "<iframe sandbox=\"allow-scripts\"" in report
    assert "Paris" in result.summary and "Checks (ablate)" in result.summary


def test_dictionary_refs_give_the_same_graph_and_refuse_non_transcoders(lab):
    lm = load(ModelRef(model=str(GOLDEN / "model")))
    ct = load_transcoders(GOLDEN / "transcoders_seed1", "ct")
    inputs = lab.store.root.parent / "inputs"
    refs = []
    for layer, t in reversed(list(enumerate(ct.layers))):        # any order: the layer comes from the site
        folder = inputs / f"tc{layer}"
        folder.mkdir(parents=True)
        save_file({"W_enc": t.W_enc.T.contiguous(), "W_dec": t.W_dec.contiguous(), "b_enc": t.b_enc,
                   "b_dec": t.b_dec, "threshold": t.threshold}, str(folder / "sae_weights.safetensors"))
        (folder / "cfg.json").write_text(json.dumps({
            "architecture": "jumprelu_transcoder", "d_in": 32, "d_sae": 96, "d_out": 32, "dtype": "float32",
            "apply_b_dec_to_input": False, "hook_name": f"blocks.{layer}.ln2.hook_normalized",
            "hook_name_out": f"blocks.{layer}.hook_mlp_out"}), encoding="utf-8")
        refs.append(f"tc{layer}")
    ids = torch.tensor([0, 1, 7, 3, 10, 4])
    tcs = dictionary_transcoders(lab, refs)
    a, b = build_graph(lm, ids, ct, None, batch_size=16), build_graph(lm, ids, tcs, None, batch_size=16)
    torch.testing.assert_close(a.adjacency, b.adjacency)
    with pytest.raises(InputError) as err:
        dictionary_transcoders(lab, refs[:1])
    assert err.value.field == "transcoders.refs"                 # layer 1 alone: layer 0 missing


def test_dictionary_features_carry_their_names_and_feature_page_calls(lab):
    inputs = lab.store.root.parent / "inputs"
    ct = load_transcoders(GOLDEN / "transcoders_seed1", "ct")
    refs = []
    for layer, t in enumerate(ct.layers):
        folder = inputs / f"d{layer}"
        folder.mkdir(parents=True)
        save_file({"W_enc": t.W_enc.T.contiguous(), "W_dec": t.W_dec.contiguous(), "b_enc": t.b_enc,
                   "b_dec": t.b_dec, "threshold": t.threshold}, str(folder / "sae_weights.safetensors"))
        (folder / "cfg.json").write_text(json.dumps({
            "architecture": "jumprelu_transcoder", "d_in": 32, "d_sae": 96, "d_out": 32, "dtype": "float32",
            "apply_b_dec_to_input": False, "hook_name": f"blocks.{layer}.ln2.hook_normalized",
            "hook_name_out": f"blocks.{layer}.hook_mlp_out"}), encoding="utf-8")
        refs.append(f"d{layer}")
        sha = load_dictionary(lab, f"d{layer}").cfg.sha256                # the explain tool's label file, by hand
        labels = {str(k): {"unit": str(k), "explanation": f"named {layer}/{k}", "verdict": "ok", "detection": 0.9,
                           "fuzzing": 0.9, "run_id": "r"} for k in range(96)}
        (lab.store.root / "labels").mkdir(parents=True, exist_ok=True)
        (lab.store.root / "labels" / f"dict-{sha[:24]}.json").write_text(json.dumps(labels), encoding="utf-8")
    result = run_graph(GraphRequest(model=str(GOLDEN / "model"), prompt="the capital of france is", check_top=2,
                                    transcoders={"kind": "dictionary", "refs": refs}), lab=lab)
    feats = [n for n in result.top_nodes if n.kind == "feature"]
    assert feats and all(n.name == f"named {n.layer}/{n.feature}" for n in feats)
    view = (lab.store.run_dir(result.run_id) / "views" / "graph.html").read_text(encoding="utf-8")
    assert '\\"tool\\": \\"features\\"' in view or '"tool": "features"' in view
