"""attribute: the shares add up to the metric exactly (closed form), heads and neurons add up to their layer,
the numbers equal TransformerLens' decompose_resid / stack_head_results / logit_attrs on a folded bridge,
and attribution patching's exact checks equal TransformerLens' head patching."""

import shutil

import pytest
import torch

from neurotrace.lab.attribution import AttributeRequest, run_attribute
from neurotrace.lab.attribution.figures import FIGURES
from neurotrace.lab.attribution.schema import RESULTS_FILE, AttributeResults
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.testing.records import assert_redraws, read_back

PROMPT, CORRUPT = "the capital of france is", "the capital of spain is"


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def _randomise_norms(src, out):
    """A copy of a tiny model whose final norm has random weight (and bias), so the norm cannot hide."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src)
    g = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if ("ln_f" in name or "norm" in name) and p.ndim == 1:
            with torch.no_grad():
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.5 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, out / f)
    return out


@pytest.fixture(scope="module")
def gpt2_ln(tmp_path_factory, tiny_gpt2):
    return _randomise_norms(tiny_gpt2, tmp_path_factory.mktemp("ln") / "gpt2")


@pytest.fixture(scope="module")
def llama_rms(tmp_path_factory, tiny_llama):
    return _randomise_norms(tiny_llama, tmp_path_factory.mktemp("rms") / "llama")


@pytest.fixture(scope="module")
def gemma_gqa(tmp_path_factory):
    """A tiny Gemma: (1 + weight) RMSNorms, sqrt(d)-scaled embeddings, grouped-query attention."""
    from transformers import GemmaConfig, GemmaForCausalLM

    from neurotrace.testing.tiny import tiny_tokenizer

    out = tmp_path_factory.mktemp("gemma") / "m"
    tok = tiny_tokenizer("causal")
    torch.manual_seed(0)
    model = GemmaForCausalLM(GemmaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                         max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0))
    with torch.no_grad():
        model.model.norm.weight.normal_(0, 0.5)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def gemma3_post_norms(tmp_path_factory):
    """A tiny Gemma 3: every sublayer's output is RMS-normed (random weights) before the residual add."""
    from neurotrace.testing.tiny import build_tiny

    src = build_tiny("gemma3_text", tmp_path_factory.mktemp("g3") / "src", n_layers=2, seed=3)
    return _randomise_norms(src, tmp_path_factory.mktemp("g3") / "m")


def _logits(path, prompt=PROMPT):
    lm = load(ModelRef(model=str(path)))
    ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return lm, lm.model(input_ids=ids).logits[0, -1]


@pytest.mark.parametrize("which", ["gpt2_ln", "llama_rms", "tiny_neox", "gemma_gqa", "gemma3_post_norms"])
@pytest.mark.parametrize("contrast", [None, "rome"])
def test_the_shares_add_up_to_the_metric_exactly(lab, which, contrast, request):
    path = request.getfixturevalue(which)
    result = run_attribute(AttributeRequest(model=str(path), prompt=PROMPT, target="paris", contrast=contrast), lab=lab)
    lm, logits = _logits(path)
    t = lm.tokenizer.convert_tokens_to_ids("paris")
    expect = logits[t] - (logits[lm.tokenizer.convert_tokens_to_ids("rome")] if contrast else logits.mean())
    assert result.metric_value == pytest.approx(float(expect), abs=1e-4)
    assert sum(c.value for c in result.components) == pytest.approx(float(expect), abs=1e-4)
    names = {c.name for c in result.components}
    assert "remainder" not in names and ("pos_embed" in names) == (which == "gpt2_ln")
    assert result.metric == ("logit_diff" if contrast else "centred_logit")


def test_heads_and_bias_add_up_to_each_attention_share(lab, gpt2_ln):
    result = run_attribute(AttributeRequest(model=str(gpt2_ln), prompt=PROMPT, target="paris"), lab=lab)
    rec = lab.store.read_json(result.run_id, "attribute_results.json")
    comps = {c["name"]: c["value"] for c in rec["components"]}
    for layer, row in enumerate(rec["heads"]):
        assert sum(row) + rec["head_bias"][layer] == pytest.approx(comps[f"L{layer}.attn"], abs=1e-5)
    assert {"embed", "pos_embed", "L0.attn", "L1.mlp", "bias"} <= set(comps)


def test_with_post_sublayer_norms_heads_and_neurons_still_add_up_to_their_layer(lab, gemma3_post_norms):
    """Gemma 2/3 and OLMo 2 norm each sublayer's output before the residual add: the hooked attn_out /
    mlp_out are those norms' outputs (TransformerLens' hook_attn_out after ln1_post), and each head's and
    neuron's share goes through the norm frozen at this run, so they add up to the layer's share."""
    lm = load(ModelRef(model=str(gemma3_post_norms)))
    assert lm.adapter.post_norms and lm.adapter.attn_out.endswith("post_attention_layernorm")
    result = run_attribute(AttributeRequest(model=str(gemma3_post_norms), prompt=PROMPT, target="paris",
                                            top_k=4), lab=lab)
    rec = lab.store.read_json(result.run_id, "attribute_results.json")
    comps = {c["name"]: c["value"] for c in rec["components"]}
    assert "remainder" not in comps
    for layer, row in enumerate(rec["heads"]):
        assert sum(row) + rec["head_bias"][layer] == pytest.approx(comps[f"L{layer}.attn"], abs=1e-5)
    from neurotrace.lab.attribution.dla import attribute, capture, frozen_norm, unembedding
    from neurotrace.lab.model.access.adapters import site_name

    ids = lm.tokenizer(PROMPT, return_tensors="pt")["input_ids"][0]
    acts, _ = capture(lm, ids, len(ids) - 1)
    w_u, _ = unembedding(lm)
    u = w_u[lm.tokenizer.convert_tokens_to_ids("paris")] - w_u.mean(0)
    out = attribute(lm, acts, frozen_norm(lm, acts[site_name("resid_post", lm.n_layers - 1)]), u, 0.0, 0.0)
    down_bias = [lm.adapter.module(lm.model, lm.adapter.mlp_down, layer).bias for layer in range(lm.n_layers)]
    assert all(b is None for b in down_bias)
    for layer in range(lm.n_layers):
        assert float(out.neurons[layer].sum()) == pytest.approx(out.components[f"L{layer}.mlp"], abs=1e-5)


def test_shares_equal_transformerlens_logit_attrs_on_the_folded_bridge(lab, gpt2_ln):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    lm = load(ModelRef(model=str(gpt2_ln)))
    bridge = TransformerBridge.boot_transformers(str(gpt2_ln), hf_model=AutoModelForCausalLM.from_pretrained(gpt2_ln),
                                                 tokenizer=lm.tokenizer, device="cpu")
    bridge.enable_compatibility_mode()                                 # folds the final LayerNorm into W_U
    ids = lm.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    t, c = (torch.tensor([lm.tokenizer.convert_tokens_to_ids(w)]) for w in ("paris", "rome"))
    _, cache = bridge.run_with_cache(ids)
    stack, labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
    tl = cache.logit_attrs(stack, tokens=t, incorrect_tokens=c, pos_slice=-1)[:, 0]
    result = run_attribute(AttributeRequest(model=str(gpt2_ln), prompt=PROMPT, target="paris", contrast="rome",
                                            top_k=8), lab=lab)
    ours = {s.name: s.value for s in result.components}
    names = {"embed": "embed", "pos_embed": "pos_embed"} | {
        f"{layer}_{k}_out": f"L{layer}.{k}" for layer in range(lm.n_layers) for k in ("attn", "mlp")}
    assert [ours[names[lab_]] for lab_ in labels] == pytest.approx(tl.tolist(), abs=1e-4)
    heads = cache.logit_attrs(cache.stack_head_results(layer=-1, pos_slice=-1), tokens=t, incorrect_tokens=c,
                              pos_slice=-1)[:, 0]
    rec = lab.store.read_json(result.run_id, "attribute_results.json")
    assert [v for row in rec["heads"] for v in row] == pytest.approx(heads.tolist(), abs=1e-4)
    neurons = cache.logit_attrs(cache.stack_neuron_results(layer=-1, pos_slice=-1), tokens=t, incorrect_tokens=c,
                                pos_slice=-1)[:, 0].detach()                 # (layers * d_mlp,)
    top = result.top_neurons[0]
    layer, unit = map(int, top.name[1:].split("N"))
    assert top.value == pytest.approx(float(neurons[layer * lm.d_mlp + unit]), abs=1e-4)
    assert float(neurons.abs().max()) == pytest.approx(abs(top.value), abs=1e-4)


def test_attribution_patching_checks_equal_transformerlens_head_patching(lab, tiny_gpt2):
    from transformer_lens import patching

    result = run_attribute(AttributeRequest(model=str(tiny_gpt2), prompt=PROMPT, corrupt_prompt=CORRUPT,
                                            target="paris", contrast="rome", check_top=3), lab=lab)
    p = result.patching
    lm = load(ModelRef(model=str(tiny_gpt2), backend="bridge"))
    t, c = (lm.tokenizer.convert_tokens_to_ids(w) for w in ("paris", "rome"))
    clean_ids, corrupt_ids = (lm.tokenizer(s, return_tensors="pt")["input_ids"] for s in (PROMPT, CORRUPT))
    _, clean_cache = lm.bridge.run_with_cache(clean_ids)

    def metric(logits):
        return logits[0, -1, t] - logits[0, -1, c]

    with torch.no_grad():
        m_corrupt = float(metric(lm.bridge(corrupt_ids)).detach())
    tl = patching.get_act_patch_attn_head_out_all_pos(lm.bridge, corrupt_ids, clean_cache, metric).detach() - m_corrupt
    assert p.metric_corrupt == pytest.approx(m_corrupt, abs=1e-4)
    checked = [h for h in p.heads if h.exact is not None]
    assert len(checked) == 3 and all(h.exact is None for h in p.heads[3:])
    for h in checked:
        layer, head = map(int, h.name[1:].split("H"))
        assert h.exact == pytest.approx(float(tl[layer, head]), abs=1e-4)
    assert len(p.neurons) == 10 and p.neurons[0].exact is not None


def test_attribution_patching_is_exact_for_a_component_the_metric_depends_on_linearly(lab, tiny_gpt2):
    """Last-layer neurons feed the logits through one linear map and the final norm: small patches are
    estimated to first order, so estimate and exact agree in sign for the top neuron."""
    result = run_attribute(AttributeRequest(model=str(tiny_gpt2), prompt=PROMPT, corrupt_prompt=CORRUPT,
                                            target="paris", contrast="rome", check_top=1), lab=lab)
    top = result.patching.neurons[0]
    assert top.exact is not None and top.estimate * top.exact > 0


def test_input_errors_name_their_field(lab, tiny_gpt2, tiny_bert):
    with pytest.raises(InputError) as err:
        run_attribute(AttributeRequest(model=str(tiny_gpt2), prompt=PROMPT, corrupt_prompt="the cat"), lab=lab)
    assert err.value.field == "corrupt_prompt"
    with pytest.raises(InputError) as err:
        run_attribute(AttributeRequest(model=str(tiny_gpt2), prompt=PROMPT, target="paris", contrast="paris"), lab=lab)
    assert err.value.field == "contrast"
    with pytest.raises(InputError) as err:
        run_attribute(AttributeRequest(model=str(tiny_bert), prompt=PROMPT), lab=lab)
    assert err.value.field == "model"


def test_plot_redraws_an_attribute_run(lab, tiny_gpt2):
    from neurotrace.lab.plotting import PlotRequest, run_plot

    run = run_attribute(AttributeRequest(model=str(tiny_gpt2), prompt=PROMPT), lab=lab)
    plot = run_plot(PlotRequest(run_id=run.run_id), lab=lab)
    assert set(plot.kinds) == {"components", "heads"}


def test_the_saved_results_round_trip_through_their_record_and_redraw_the_runs_figures(lab, tiny_gpt2):
    result = run_attribute(AttributeRequest(model=str(tiny_gpt2), prompt=PROMPT, corrupt_prompt=CORRUPT,
                                            target="paris", contrast="rome", check_top=1), lab=lab)
    rec = read_back(lab, result.run_id, RESULTS_FILE, AttributeResults.model_validate)
    assert rec.components == result.components and rec.top_neurons == result.top_neurons
    assert rec.patching == result.patching and (rec.target, rec.contrast) == (result.target, result.contrast)
    assert_redraws(lab, result.run_id, FIGURES, rec)
    bars = FIGURES["components"](rec).axes[0].patches
    assert [b.get_height() for b in bars] == [c.value for c in rec.components]
