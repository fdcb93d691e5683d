"""The nnsight backend realises the same site hooks as the hf backend, with the same numbers."""

import pytest
import torch

from neurotrace.lab.errors import InputError
from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.model.access.hooks import hooked, recording
from neurotrace.lab.model.runtime.nnsight_backend import plan, routed_forward, traced_probs, traced_states
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.forwards import target_probs
from neurotrace.lab.tracing.grids.grid import Corrupted, approx_grid, exact_grid
from neurotrace.lab.tracing.grids.nnsight_grid import approx_grid_nnsight, exact_grid_nnsight
from neurotrace.lab.tracing.noise import subject_noise_std
from neurotrace.lab.tracing.prepare import prepare_fact
from neurotrace.testing.tiny import build_tiny

FACT = Fact(id="f", template="the capital city of {} is known for its", clean_subject="france",
            target="paris", corrupt_subject="japan")
KINDS = ["resid", "mlp", "attn"]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, tmp_path_factory):
    """The same tiny model loaded twice: (backend hf, backend nnsight)."""
    path = build_tiny(request.param, tmp_path_factory.mktemp(request.param) / "m", n_layers=3, seed=1)
    return load(ModelRef(model=str(path))), load(ModelRef(model=str(path), backend="nnsight"))


@pytest.fixture(scope="module")
def tiny_nnsight(pair):
    return pair[1]


def _max_rel(a: dict, b: dict) -> float:
    return max(float(((a[k] - b[k]).abs() / b[k].abs().clamp_min(1e-30)).max()) for k in b)


def test_nnsight_backend_wraps_the_same_transformers_model(tiny_nnsight):
    assert tiny_nnsight.nnsight is not None and tiny_nnsight.nnsight._module is tiny_nnsight.model
    assert tiny_nnsight.info()["backend"] == "nnsight"


def test_plan_visits_sites_in_execution_order_whatever_the_order_asked(tiny_nnsight):
    hooks = {s: (lambda act, site: None) for s in
             ["blocks.1.hook_resid_post", "blocks.0.mlp.hook_post", "hook_embed", "blocks.1.hook_resid_pre",
              "blocks.0.attn.hook_z", "blocks.0.hook_attn_out"]}
    assert [s.site for s in plan(tiny_nnsight, hooks)] == [
        "hook_embed", "blocks.0.attn.hook_z", "blocks.0.hook_attn_out", "blocks.0.mlp.hook_post",
        "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]


def test_traced_states_equal_the_hf_hooks_at_output_and_input_sites(tiny_nnsight):
    lm = tiny_nnsight
    ids = prepare_fact(lm, FACT, 0).ids
    sites = ["hook_embed", "blocks.1.hook_resid_pre", "blocks.0.mlp.hook_post", "blocks.2.attn.hook_z",
             "blocks.1.hook_mlp_out", "blocks.2.hook_attn_out", "blocks.2.hook_resid_post"]
    with recording(lm.model, lm.adapter, sites) as hf, torch.no_grad():
        lm.model(input_ids=ids[None])
    ours = traced_states(lm, ids, sites)
    for s in sites:
        torch.testing.assert_close(ours[s], hf[s][0], rtol=1e-5, atol=1e-6)


def test_a_replacing_hook_changes_p_target_exactly_as_under_hf(pair):
    hf_lm, lm = pair
    prep = prepare_fact(lm, FACT, 0)
    ids = prep.ids[None].expand(2, -1)

    def zero_mlp(act, site):
        out = act.clone()
        out[1] = 0
        return out

    hooks = {"blocks.1.mlp.hook_post": zero_mlp}
    hf = target_probs(hf_lm, ids, prep.predict_pos, prep.target_id, hooks)
    ours = traced_probs(lm, ids, prep.predict_pos, prep.target_id, hooks)
    torch.testing.assert_close(target_probs(lm, ids, prep.predict_pos, prep.target_id, hooks), ours, rtol=0, atol=0)
    torch.testing.assert_close(ours, hf, rtol=1e-5, atol=0)
    assert float((hf[0] - hf[1]).abs()) > 1e-6  # the hook did something


def noised(lm, prep, samples: int, seed: int) -> Corrupted:
    """ROME-style noise (3 x the subject embeddings' std) on the fact's subject, ``samples`` seeded draws."""
    noise = torch.randn((samples, prep.subject[1] - prep.subject[0], lm.d_model),
                        generator=torch.Generator().manual_seed(seed))
    return Corrupted(prep.ids, noise * 3 * subject_noise_std(lm, [prep]), prep.subject)


@pytest.mark.parametrize("window", [1, 3])
def test_exact_grid_through_nnsight_equals_the_hf_backend_with_noise(pair, window):
    hf_lm, lm = pair
    prep = prepare_fact(lm, FACT, 0)
    corr = noised(lm, prep, samples=2, seed=0)
    hf = exact_grid(hf_lm, prep, corr, KINDS, window, Reporter())
    ours = exact_grid_nnsight(lm, prep, corr, KINDS, window, Reporter(), rows_per_batch=40)
    assert _max_rel(ours, hf) <= 1e-5
    assert float(ours["resid"].std()) > 0


def test_exact_grid_through_nnsight_equals_the_hf_backend_with_a_subject_swap(pair):
    hf_lm, lm = pair
    prep = prepare_fact(lm, FACT, 0)
    corr = Corrupted(prep.swap_ids, None, prep.subject)
    hf = exact_grid(hf_lm, prep, corr, KINDS, 1, Reporter())
    assert _max_rel(exact_grid_nnsight(lm, prep, corr, KINDS, 1, Reporter()), hf) <= 1e-5


def test_the_nnsight_path_on_an_hf_loaded_model_names_the_backend_to_use(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2)))
    with pytest.raises(InputError) as err:
        traced_probs(lm, torch.tensor([[1, 2]]), 1, 0)
    assert err.value.field == "backend"


@pytest.mark.parametrize("window", [1, 2])
def test_attribution_patching_through_nnsight_equals_the_hf_backend(pair, window):
    hf_lm, lm = pair
    prep = prepare_fact(lm, FACT, 0)
    corr = noised(lm, prep, samples=3, seed=1)
    hf = approx_grid(hf_lm, prep, corr, KINDS, window)
    ours = approx_grid_nnsight(lm, prep, corr, KINDS, window)
    for k in KINDS:
        torch.testing.assert_close(ours[k], hf[k], rtol=1e-5, atol=1e-9)
    assert float(ours["resid"].abs().max()) > 0


def test_hooks_attached_inside_routed_forward_run_in_nnsights_trace_not_as_pytorch_hooks(pair):
    hf_lm, lm = pair
    ids = prepare_fact(lm, FACT, 0).ids[None]

    def scale(act, site):
        return act * 0.5

    with hooked(hf_lm.model, hf_lm.adapter, {"blocks.1.hook_mlp_out": scale}), torch.no_grad():
        want = hf_lm.model(input_ids=ids).logits
    with routed_forward(lm) as forward, hooked(lm.model, lm.adapter, {"blocks.1.hook_mlp_out": scale}):
        assert not any(m._forward_hooks for m in lm.model.modules())   # nothing attached to PyTorch
        got = forward(input_ids=ids).logits
        plain = lm.model(input_ids=ids).logits                           # a direct call sees no hook
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(plain, want)


def test_routed_forward_is_none_for_the_hf_backend(pair):
    with routed_forward(pair[0]) as forward:
        assert forward is None


def test_berts_attention_output_module_is_reached_under_nnsights_renamed_child(tiny_bert):
    hf_lm, lm = load(ModelRef(model=str(tiny_bert))), load(ModelRef(model=str(tiny_bert), backend="nnsight"))
    ids = torch.tensor(lm.tokenizer("the capital of france is [MASK] .").input_ids)
    sites = ["blocks.0.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]
    with recording(hf_lm.model, hf_lm.adapter, sites) as hf, torch.no_grad():
        hf_lm.model(input_ids=ids[None])
    ours = traced_states(lm, ids, sites)
    for s in sites:
        torch.testing.assert_close(ours[s], hf[s][0], rtol=1e-5, atol=1e-6)
