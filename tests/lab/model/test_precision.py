"""The shared precision module: which precision runs, the bfloat16 copy in the cache, the agreement record."""

import pytest
import torch

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.runtime.precision import (
    ENV_FAST,
    ExactTopHead,
    agreement,
    changed_readings,
    check_backend,
    choose,
    is_norm,
    lease_at,
    resolve,
)
from neurotrace.lab.model.weights.cache import ModelCache
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.testing.tiny import DECODER_FAMILIES, build_tiny

IDS = torch.tensor([[1, 5, 9, 13, 17, 21, 25]])


def test_float32_is_never_touched_by_the_resolution():
    assert resolve("float32", False, "cpu") == ("float32", None)
    assert resolve("float32", True, "cpu") == ("float32", None)


def test_a_cpu_without_fast_bfloat16_runs_float32_with_a_note_unless_insisted(monkeypatch):
    monkeypatch.setenv(ENV_FAST, "0")
    effective, note = resolve("bfloat16", False, "cpu")
    assert effective == "float32" and "not faster" in note and "insist_precision" in note
    effective, note = resolve("bfloat16", True, "cpu")
    assert effective == "bfloat16" and "insisted" in note
    monkeypatch.setenv(ENV_FAST, "1")
    assert resolve("bfloat16", False, "cpu") == ("bfloat16", None)


def test_bfloat16_needs_the_hf_backend_locally():
    check_backend("bfloat16", "hf")
    check_backend("float32", "nnsight", remote=True)
    with pytest.raises(InputError) as err:
        check_backend("bfloat16", "nnsight")
    assert err.value.field == "precision"


@pytest.fixture(scope="module")
def cache():
    return ModelCache()


def test_the_bfloat16_copy_is_its_own_cache_entry_and_leaves_float32_alone(cache):
    ref = ModelRef(model="fact-gpt2")
    with lease_at(cache, ref, "float32") as lm:
        before = {k: v.clone() for k, v in lm.model.state_dict().items()}
        f32_bytes = cache.used_bytes()
        clean = lm.model(input_ids=IDS).logits
    with lease_at(cache, ref, "bfloat16") as lb:
        assert lb.key != lm.key and lb.ref.dtype == "bfloat16" and lb.model is not lm.model
        for module in lb.model.modules():
            want = torch.float32 if is_norm(module) else torch.bfloat16
            assert all(p.dtype == want for p in module.parameters(recurse=False))
        reduced = lb.model(input_ids=IDS).logits.float()
    # the copy is counted in the budget (about half the float32 bytes) and the float32 model is unchanged
    assert 0.4 * f32_bytes < cache.used_bytes() - f32_bytes < 0.6 * f32_bytes
    with lease_at(cache, ref, "float32") as again:
        assert again is lm
        assert all(torch.equal(v, before[k]) for k, v in again.model.state_dict().items())
    err = float((clean.softmax(-1) - reduced.softmax(-1)).abs().max())
    assert 0 < err < 0.03
    with lease_at(cache, ref, "bfloat16") as lb2:
        assert lb2 is lb       # made once
    assert cache.load_count[lb.key] == 1


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_every_decoder_family_runs_in_bfloat16_with_norms_in_float32(family, tmp_path, cache):
    ref = ModelRef(model=str(build_tiny(family, tmp_path / family, n_layers=2)))
    with lease_at(cache, ref, "float32") as lm:
        p32 = lm.model(input_ids=IDS).logits.softmax(-1)
    seen = []
    with lease_at(cache, ref, "bfloat16") as lb:
        norms = [m for m in lb.model.modules() if is_norm(m)]
        handles = [m.register_forward_pre_hook(lambda _m, a: seen.append(a[0].dtype)) for m in norms]
        p16 = lb.model(input_ids=IDS).logits.float().softmax(-1)
        for h in handles:
            h.remove()
    assert norms and set(seen) == {torch.float32}       # every norm computed in float32
    assert float((p32 - p16).abs().max()) < 1e-3


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_the_bfloat16_unembedding_is_exact_on_each_rows_largest_logits(family, tmp_path, cache):
    ref = ModelRef(model=str(build_tiny(family, tmp_path / family, n_layers=2)))
    h = 3 * torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    with lease_at(cache, ref, "float32") as lm:
        z32 = lm.model.lm_head(h)
    with lease_at(cache, ref, "bfloat16") as lb:
        head = lb.model.lm_head
        z = head(h)
        plain = torch.nn.functional.linear(h.bfloat16(), head.weight).float()   # what a plain bfloat16 head gives
    assert isinstance(head, ExactTopHead) and z.dtype == torch.float32 and z.shape == z32.shape
    top = z32.topk(8, dim=-1).indices                     # well inside the 32 recomputed per row
    scale = float(z32.abs().max())
    assert float((z - z32).abs().gather(-1, top).max()) < 1e-5 * scale
    assert float((plain - z32).abs().gather(-1, top).max()) > 1e-3 * scale    # bfloat16 alone is not
    assert float((z - z32).abs().max()) < 2e-2 * scale                        # the rest: bfloat16's rounding


def test_post_norms_feed_the_float32_residual_stream_in_float32(tmp_path, cache):
    """Gemma's post norms and the final norm keep their float32 output; the others hand bfloat16 to the next
    product (and q/k norms to the attention)."""
    ref = ModelRef(model=str(build_tiny("gemma3_text", tmp_path / "g", n_layers=2)))
    out: dict[str, torch.dtype] = {}
    with lease_at(cache, ref, "bfloat16") as lb:
        for name, m in lb.model.named_modules():
            if is_norm(m):
                m.register_forward_hook(lambda _m, _a, o, name=name: out.__setitem__(name, o.dtype))
        lb.model(input_ids=IDS)
    layer = "model.layers.0."
    assert out[layer + "post_attention_layernorm"] == out[layer + "post_feedforward_layernorm"] == torch.float32
    assert out["model.norm"] == torch.float32
    assert out[layer + "input_layernorm"] == out[layer + "self_attn.q_norm"] == torch.bfloat16


def test_choose_keeps_every_peak_and_a_seeded_sample_of_the_rest():
    peaks, rand = choose(100, [7, 3, 7, 200], 10, seed=4)
    assert peaks == [7, 3] and len(rand) == 10 and not set(rand) & {7, 3}
    assert choose(100, [7, 3], 10, seed=4)[1] == rand
    assert choose(100, [7, 3], 10, seed=5)[1] != rand
    assert choose(5, [0], 10, seed=0) == ([0], [1, 2, 3, 4])


def test_a_reading_that_would_change_is_named_with_the_float32_run():
    changed = changed_readings({"peak layer (mlp)": 4, "half-max (mlp)": [3, 6]},
                               {"peak layer (mlp)": 5, "half-max (mlp)": [3, 6]})
    assert changed == ["peak layer (mlp): 4 -> 5"]
    agree = agreement("indirect effect", ["a (peak)", "b", "c"], 1, 0, [0.5, 0.1, 0.2], [0.49, 0.1, 0.25],
                      changed, "trace with precision='float32'")
    assert agree.n == 3 and agree.n_peaks == 1 and agree.n_random == 2
    assert agree.max_abs_diff == pytest.approx(0.05) and agree.worst == "c"
    assert agree.rerun and "peak layer (mlp): 4 -> 5" in agree.summary and "precision='float32'" in agree.summary
    calm = agreement("indirect effect", ["a"], 1, 0, [0.5], [0.5], [], "unused")
    assert calm.rerun is None and "no reading would change" in calm.summary
