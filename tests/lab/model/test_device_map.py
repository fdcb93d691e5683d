"""device='auto': accelerate places the layers under a memory map (here CPU + disk offload), and traces
give the numbers of the plain load."""

import pytest
import torch

from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.model.cache import ModelCache
from neurotrace.lab.model.loading import ModelRef, load
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.grid import Corrupted, exact_grid
from neurotrace.lab.tracing.prepare import prepare_fact, subject_noise_std, target_probs
from neurotrace.testing.tiny import build_tiny

FACT = Fact(id="f", template="the capital city of {} is known for its", clean_subject="france",
            target="paris", corrupt_subject="japan")
HOST_BYTES = 150_000  # room for the embeddings and a block or two of the tiny 4-layer model; the rest to disk


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tiny_path(request, tmp_path_factory):
    return build_tiny(request.param, tmp_path_factory.mktemp(request.param) / "m", n_layers=4, seed=2)


@pytest.fixture(scope="module")
def pair(tiny_path, tmp_path_factory):
    plain = load(ModelRef(model=str(tiny_path)))
    placed = load(ModelRef(model=str(tiny_path), device="auto"), max_memory={"cpu": HOST_BYTES},
                  offload_dir=str(tmp_path_factory.mktemp("offload")))
    return plain, placed


def test_a_small_host_budget_offloads_some_layers_to_disk(pair):
    _, placed = pair
    where = placed.info()["device_map"]
    assert set(where) == {"cpu", "disk"}, where
    assert placed.nbytes < pair[0].nbytes  # offloaded weights take no memory
    assert placed.device == torch.device("cpu")


def test_hooks_on_an_offloaded_model_give_the_plain_numbers(pair):
    plain, placed = pair
    prep = prepare_fact(plain, FACT, 0)
    ids = prep.ids[None].expand(2, -1)

    def zero(act, site):
        out = act.clone()
        out[1, 2:] = 0
        return out

    hooks = {"blocks.3.hook_mlp_out": zero, "blocks.2.hook_resid_pre": lambda act, site: None}
    torch.testing.assert_close(target_probs(placed, ids, prep.predict_pos, prep.target_id, hooks),
                               target_probs(plain, ids, prep.predict_pos, prep.target_id, hooks), rtol=1e-5, atol=0)


@pytest.mark.parametrize("force_full", [True, False])  # False: the fast GPT-2 / decoder paths
def test_the_exact_trace_grid_of_an_offloaded_model_equals_the_plain_load(pair, force_full):
    plain, placed = pair
    prep = prepare_fact(plain, FACT, 0)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((2, prep.subject[1] - prep.subject[0], plain.d_model), generator=g)
    corr = Corrupted(prep.ids, noise * 3 * subject_noise_std(plain, [prep]), prep.subject)
    want = exact_grid(plain, prep, corr, ["resid", "mlp"], 3, Reporter(), force_full=True)
    got = exact_grid(placed, prep, corr, ["resid", "mlp"], 3, Reporter(), force_full=force_full)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-7)


def test_the_cache_places_auto_models_under_its_host_budget_and_lists_where_layers_live(tiny_path, tmp_path,
                                                                                           monkeypatch):
    monkeypatch.setenv("NEUROTRACE_MODELS_DIR", str(tmp_path))
    cache = ModelCache(budget_bytes=HOST_BYTES)
    assert cache.max_memory()["cpu"] == HOST_BYTES
    cache.get(ModelRef(model=str(tiny_path), device="auto"))
    (row,) = cache.listing()
    assert row["layers"] == {"cpu": "0", "disk": "1-3"}, row["layers"]
    assert set(row["device_bytes"]) == {"cpu", "disk"} and row["device_bytes"]["cpu"] <= HOST_BYTES
    assert cache.used_by_device()["cpu"] == row["device_bytes"]["cpu"] == cache.used_bytes()
