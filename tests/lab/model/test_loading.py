"""Model lab: loading by directory, adapters for each family, hooks, errors that name the field."""

import pytest
import torch

from neurotrace.lab.errors import InputError, NotFound
from neurotrace.lab.model.access.adapters import adapter_for, site_name
from neurotrace.lab.model.access.hooks import hooked, run_with_cache
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.tiny import DECODER_FAMILIES, build_tiny

SITES = ["hook_embed"] + [site_name(k, 1) for k in ("resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_post")]


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_bert", "tiny_llama", "tiny_neox"])
def test_every_family_exposes_every_site_with_the_right_width(fixture, request):
    lm = load(ModelRef(model=str(request.getfixturevalue(fixture))))
    enc = lm.tokenizer("the capital of france is", return_tensors="pt")
    _, cache = run_with_cache(lm.model, lm.adapter, SITES, input_ids=enc["input_ids"])
    n = enc["input_ids"].shape[1]
    for site in SITES:
        width = lm.d_mlp if site.endswith("mlp.hook_post") else lm.d_model
        assert cache[site].shape == (1, n, width), site
    assert lm.lm_kind == ("masked" if fixture == "tiny_bert" else "causal")


def test_resid_post_of_a_layer_is_resid_pre_of_the_next(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2)))
    ids = lm.tokenizer("the cat is big", return_tensors="pt")["input_ids"]
    _, cache = run_with_cache(lm.model, lm.adapter, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"],
                              input_ids=ids)
    assert torch.equal(cache["blocks.0.hook_resid_post"], cache["blocks.1.hook_resid_pre"])


def test_resid_post_equals_resid_pre_plus_attn_plus_mlp_in_a_pre_ln_model(tiny_llama):
    lm = load(ModelRef(model=str(tiny_llama)))
    ids = lm.tokenizer("the cat is big", return_tensors="pt")["input_ids"]
    sites = [site_name(k, 0) for k in ("resid_pre", "attn_out", "mlp_out", "resid_post")]
    _, c = run_with_cache(lm.model, lm.adapter, sites, input_ids=ids)
    torch.testing.assert_close(c[sites[0]] + c[sites[1]] + c[sites[2]], c[sites[3]])


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_attn_out_and_mlp_out_are_what_the_residual_receives_in_every_decoder_family(family, tmp_path):
    """resid_post = resid_pre + attn_out + mlp_out in every decoder family (NeoX's parallel sublayers too),
    including Gemma 3, whose sublayer outputs are normed before the add: the hooks sit on those norms."""
    lm = load(ModelRef(model=str(build_tiny(family, tmp_path / family, n_layers=2, seed=2))))
    with torch.no_grad():
        for name, param in lm.model.named_parameters():
            if "norm" in name and param.ndim == 1:
                param.normal_(0.5, 0.5, generator=torch.Generator().manual_seed(1))
    ids = lm.tokenizer("the capital of france is", return_tensors="pt")["input_ids"]
    sites = [site_name(k, 1) for k in ("resid_pre", "attn_out", "mlp_out", "resid_post")]
    _, c = run_with_cache(lm.model, lm.adapter, sites, input_ids=ids)
    torch.testing.assert_close(c[sites[0]] + c[sites[1]] + c[sites[2]], c[sites[3]], rtol=1e-5, atol=1e-5)


def test_gemma3_sublayer_outputs_equal_transformerlens_hook_attn_out_and_hook_mlp_out(tmp_path):
    from transformer_lens.model_bridge import TransformerBridge

    lm = load(ModelRef(model=str(build_tiny("gemma3_text", tmp_path / "g", n_layers=2, seed=3))))
    with torch.no_grad():
        for name, param in lm.model.named_parameters():
            if "norm" in name and param.ndim == 1:
                param.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    ids = lm.tokenizer("the capital of france is", return_tensors="pt")["input_ids"]
    sites = [site_name(k, layer) for layer in range(2) for k in ("attn_out", "mlp_out")]
    _, ours = run_with_cache(lm.model, lm.adapter, sites, input_ids=ids)
    bridge = TransformerBridge.boot_transformers(str(lm.ref.model), hf_model=lm.model, tokenizer=lm.tokenizer,
                                                 device="cpu")
    _, tl = bridge.run_with_cache(ids)
    for site in sites:
        torch.testing.assert_close(ours[site], tl[site], rtol=1e-5, atol=1e-5)


def test_a_replacing_hook_changes_the_output_and_is_removed_afterwards(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2)))
    ids = lm.tokenizer("the cat is big", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = lm.model(input_ids=ids).logits
        with hooked(lm.model, lm.adapter, {"blocks.1.mlp.hook_post": lambda act, site: torch.zeros_like(act)}):
            zeroed = lm.model(input_ids=ids).logits
        again = lm.model(input_ids=ids).logits
    assert not torch.allclose(base, zeroed)
    assert torch.equal(base, again)


def test_hooks_are_removed_even_when_the_forward_fails(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2)))

    def bad(act, site):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError), hooked(lm.model, lm.adapter, {"hook_embed": bad}):
        lm.model(input_ids=torch.tensor([[1, 2]]))
    lm.model(input_ids=torch.tensor([[1, 2]]))  # no hook left behind


def test_unknown_site_and_layer_out_of_range_name_their_field(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2)))
    with raises_lab_error(InputError) as err:
        lm.adapter.site(lm.model, "blocks.0.nonsense")
    assert err.value.field == "site"
    with raises_lab_error(InputError) as err:
        lm.adapter.site(lm.model, "blocks.9.hook_resid_post")
    assert err.value.field == "layer" and "0..1" in err.value.fix


def test_missing_model_gives_not_found_naming_the_id_and_the_fix():
    with raises_lab_error(NotFound) as err:
        load(ModelRef(model="no-such-org/no-such-model"))
    assert err.value.field == "model" and "no-such-org/no-such-model" in err.value.message
    assert "HF_HOME" in err.value.fix and "HF_HUB_OFFLINE" in err.value.fix


def test_wrong_kind_and_bad_device_are_input_errors(tiny_gpt2):
    with raises_lab_error(InputError) as err:
        load(ModelRef(model=str(tiny_gpt2), lm_kind="masked"))
    assert err.value.field == "lm_kind"
    with raises_lab_error(InputError) as err:
        load(ModelRef(model=str(tiny_gpt2), device="tpu9"))
    assert err.value.field == "device"


def test_bad_dtype_is_rejected_by_the_request_model():
    with pytest.raises(ValueError, match="dtype"):
        ModelRef(model="x", dtype="float64")


def test_unsupported_architecture_lists_the_supported_ones():
    class Cfg:
        model_type = "t5"

    with raises_lab_error(InputError) as err:
        adapter_for(Cfg())
    assert "gpt2" in err.value.fix and "bert" in err.value.fix


def test_bridge_backend_boots_transformerlens_on_a_local_gpt2(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2), backend="bridge"))
    assert lm.bridge is not None
    ids = lm.tokenizer("the cat is big", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hf_logits = lm.model(input_ids=ids).logits
        tl_logits = lm.bridge(ids)
    torch.testing.assert_close(tl_logits, hf_logits, atol=1e-4, rtol=1e-4)
