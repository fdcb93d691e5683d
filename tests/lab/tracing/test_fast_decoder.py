"""The exact fast path of every decoder family equals the batched full forward on every cell."""

import os

import pytest
import torch

from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.grids.fast_decoder import supports_fast_decoder
from neurotrace.lab.tracing.grids.fast_gpt2 import supports_fast_path
from neurotrace.lab.tracing.grids.grid import Corrupted, exact_grid
from neurotrace.lab.tracing.noise import subject_noise_std
from neurotrace.lab.tracing.prepare import prepare_fact
from neurotrace.testing.tiny import DECODER_FAMILIES, build_tiny

FACT = Fact(id="f", template="the capital city of {} is known for its", clean_subject="france",
            target="paris", corrupt_subject="japan")
KINDS = ["resid", "mlp", "attn"]
REAL_FACT = Fact(id="paris", template="{} is located in the city of", clean_subject="The Eiffel Tower",
                 target="Paris")


def _noise(lm, prep, samples: int = 3) -> Corrupted:
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((samples, prep.subject[1] - prep.subject[0], lm.d_model), generator=g)
    return Corrupted(prep.ids, noise * 3 * subject_noise_std(lm, [prep]), prep.subject)


def _max_rel(fast: dict, full: dict) -> float:
    return max(float(((fast[k] - full[k]).abs() / full[k].abs().clamp_min(1e-30)).max()) for k in full)


@pytest.fixture(scope="module", params=[f for f in DECODER_FAMILIES if f != "gpt2"])
def tiny_decoder(request, tmp_path_factory):
    path = build_tiny(request.param, tmp_path_factory.mktemp(request.param) / "m", n_layers=4, seed=1)
    return load(ModelRef(model=str(path)))


def test_every_non_gpt2_decoder_family_takes_the_generic_fast_path(tiny_decoder):
    assert supports_fast_decoder(tiny_decoder) and not supports_fast_path(tiny_decoder)


@pytest.mark.parametrize("window", [1, 3])
def test_fast_decoder_grid_equals_the_full_forward_on_every_cell_with_noise(tiny_decoder, window):
    """Noise corruption with several samples, windows wide enough that window rows share states; row
    batches small enough to start at many different positions (and so many probes)."""
    lm = tiny_decoder
    prep = prepare_fact(lm, FACT, 0)
    corr = _noise(lm, prep)
    fast = exact_grid(lm, prep, corr, KINDS, window, Reporter(), rows_per_batch=29)
    full = exact_grid(lm, prep, corr, KINDS, window, Reporter(), force_full=True)
    assert _max_rel(fast, full) <= 1e-5
    assert float(fast["mlp"].std()) > 0 and float(fast["resid"].std()) > 0


def test_fast_decoder_grid_equals_the_full_forward_with_a_subject_swap(tiny_decoder):
    lm = tiny_decoder
    prep = prepare_fact(lm, FACT, 0)
    corr = Corrupted(prep.swap_ids, None, prep.subject)
    fast = exact_grid(lm, prep, corr, KINDS, 2, Reporter())
    full = exact_grid(lm, prep, corr, KINDS, 2, Reporter(), force_full=True)
    assert _max_rel(fast, full) <= 1e-5


def test_gemma3_sliding_window_is_shorter_than_the_prompt_so_the_sliding_mask_matters(tmp_path):
    """The tiny Gemma 3 alternates sliding (window 3) and full layers; with the window ignored the
    grid would differ, so equality above checks the sliding masks too."""
    lm = load(ModelRef(model=str(build_tiny("gemma3_text", tmp_path / "g", n_layers=4, seed=1))))
    assert lm.config.sliding_window < len(prepare_fact(lm, FACT, 0).ids)
    assert set(lm.config.layer_types) == {"sliding_attention", "full_attention"}


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() - b.double()).abs() / b.double().abs().clamp_min(1e-30)


@pytest.mark.realmodel
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_fast_decoder_grid_is_the_full_forward_computation_on_installed_real_models(name):
    """Opt-in (NEUROTRACE_REAL_MODELS=1): the GGUF catalog models, when installed (converted once, cached).

    In float32 neither path is within 1e-5 of the same model run in float64: on 18-30 layers the
    batched full forward is itself off by up to 1e-4 relative on a cell (measured 2026-12-01, SmolLM2,
    mlp grid, 1 sample: full 1.0e-4, fast 2.1e-5; Gemma 3: full 1.1e-5, fast 1.6e-5), so the two
    float32 paths differ by that much too: reduction order, not a different computation. So: in float64
    the two paths agree on every cell (to float32 rounding of the logits); in float32 the fast path is
    no further from float64 than the full forward (rms over cells, 1.5x slack), within 3e-5 of float64
    on the cells that matter (p >= a tenth of the peak) and within 2e-5 of the peak on every cell.
    Gemma 3's sliding window (512) is longer than this prompt: the tiny Gemma 3 checks the masks."""
    if not os.environ.get("NEUROTRACE_REAL_MODELS"):
        pytest.skip("set NEUROTRACE_REAL_MODELS=1 to run the installed real models")
    if not catalog.is_installed(name):
        pytest.skip(f"{name} is not installed (neurotrace models fetch {name})")
    lm = load(ModelRef(model=str(catalog.converted(name))))
    prep = prepare_fact(lm, REAL_FACT, 0)
    corr = _noise(lm, prep, samples=1)
    fast = exact_grid(lm, prep, corr, ["mlp"], 10, Reporter())["mlp"]
    full = exact_grid(lm, prep, corr, ["mlp"], 10, Reporter(), force_full=True)["mlp"]
    lm.model.double()
    corr64 = Corrupted(corr.ids, corr.noise.double(), corr.subject)
    fast64 = exact_grid(lm, prep, corr64, ["mlp"], 10, Reporter())["mlp"]
    exact = exact_grid(lm, prep, corr64, ["mlp"], 10, Reporter(), force_full=True)["mlp"]
    peak = float(exact.max())
    assert float(_rel(fast64, exact).max()) <= 1e-6
    assert float(_rel(fast, exact).pow(2).mean().sqrt()) <= 1.5 * float(_rel(full, exact).pow(2).mean().sqrt())
    assert float(_rel(fast, exact)[exact >= peak / 10].max()) <= 3e-5
    assert float((fast - exact).abs().max()) <= 2e-5 * peak


def test_attribution_patching_is_one_forward_and_one_backward_for_the_whole_grid(tiny_decoder):
    from neurotrace.lab.tracing.grids.grid import approx_grid

    lm = tiny_decoder
    prep = prepare_fact(lm, FACT, 0)
    corr = _noise(lm, prep)
    calls = []
    embed = lm.adapter.module(lm.model, lm.adapter.embed)
    handle = embed.register_forward_hook(lambda m, a, out: calls.append(out.shape[0]))
    try:
        est = approx_grid(lm, prep, corr, KINDS, 3)
    finally:
        handle.remove()
    assert calls == [1, corr.samples]          # the clean states, then one corrupted batch of every sample
    assert all(est[k].shape == (lm.n_layers, len(prep.ids)) and bool(est[k].isfinite().all()) for k in KINDS)


def test_the_unchanged_prefix_ends_at_the_first_position_the_corruption_touches():
    from neurotrace.lab.tracing.grids.rowplan import unchanged_prefix

    ids = torch.tensor([5, 6, 7, 8, 9])
    assert unchanged_prefix(ids, Corrupted(ids, torch.zeros(3, 2, 4), (2, 4))) == 2       # noise on the subject
    assert unchanged_prefix(ids, Corrupted(torch.tensor([5, 6, 7, 1, 9]), None, (3, 4))) == 3   # a swapped token
    assert unchanged_prefix(ids, Corrupted(ids, None, (0, 1))) == 5                        # nothing corrupted
