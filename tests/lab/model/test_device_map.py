"""device='auto': accelerate places the layers under a memory map (here CPU + disk offload), and the
experiments (trace, clamp_sweep, capture, intervene, logit_lens, attribute, patch) give the numbers of
the plain load. (One machine here has no GPU: the CPU + disk offload runs the code paths that fetch
offloaded weights and move tensors between placements.)"""

import pytest
import torch

from neurotrace import (
    AttributeRequest,
    CaptureRequest,
    ClampSweepRequest,
    InterveneRequest,
    LogitLensRequest,
    PatchRequest,
    TraceRequest,
    run_attribute,
    run_capture,
    run_clamp_sweep,
    run_intervene,
    run_logit_lens,
    run_patch,
    run_trace,
)
from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.cache import ModelCache
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.forwards import target_probs
from neurotrace.lab.tracing.grids.grid import Corrupted, exact_grid
from neurotrace.lab.tracing.noise import subject_noise_std
from neurotrace.lab.tracing.prepare import prepare_fact
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
    assert placed.fingerprint == pair[0].fingerprint  # offloaded values are read from the offload folder


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


# -- whole experiments on an offloaded model give the plain load's numbers -----------------------------

PROMPT = "the capital city of france is"
SKIP = {"seconds", "elapsed_s", "tokens_per_second",     # wall-clock readings differ between any two runs
        "run_id", "summary", "next"}
EXPERIMENTS = {
    "trace": (run_trace, lambda m, dev: TraceRequest(trace_unknown=True, models=[m], facts=[FACT], device=dev,
                                                     corruption={"kind": "noise", "samples": 2}),
              "trace_results.json"),
    "clamp_sweep": (run_clamp_sweep, lambda m, dev: ClampSweepRequest(
        model=m, neurons=["1:3"], values=[None, 5.0], prompts=[PROMPT], max_new_tokens=4, controls=1, device=dev),
                    "clamp_results.json"),
    "intervene": (run_intervene, lambda m, dev: InterveneRequest(
        model=m, prompts=[{"prompt": PROMPT, "target": "paris"}], max_new_tokens=3, device=dev,
        policies=[{"kind": "zero", "site": "blocks.2.hook_mlp_out"}]), "report.json"),
    "logit_lens": (run_logit_lens, lambda m, dev: LogitLensRequest(model=m, prompt=PROMPT, target="paris", device=dev),
                   "logit_lens_results.json"),
    "attribute": (run_attribute, lambda m, dev: AttributeRequest(model=m, prompt=PROMPT, target="paris", device=dev,
                                                                 corrupt_prompt="the capital city of japan is"), None),
    "patch": (run_patch, lambda m, dev: PatchRequest(model=m, clean=PROMPT, corrupt="the capital city of japan is",
                                                     metric="p_target", device=dev), None),
}


@pytest.fixture(scope="module")
def labs(tiny_path, tmp_path_factory):
    """A plain lab and one whose cache's host budget offloads most blocks of device='auto' loads to disk."""
    root = tmp_path_factory.mktemp("labs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEUROTRACE_MODELS_DIR", str(root / "models"))          # where the offload folder goes
        plain, placed = Lab(LabSettings(runs_dir=root / "plain")), Lab(LabSettings(runs_dir=root / "placed"))
        placed.cache = ModelCache(budget_bytes=HOST_BYTES)
        yield plain, placed


def _numbers(value, path=""):
    if isinstance(value, dict):
        for key in sorted(value):
            if key not in SKIP:
                yield from _numbers(value[key], f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)
    elif isinstance(value, str) and "neurotrace://" not in value and "/" not in value:
        yield path, value                                                  # generated text, tokens, verdicts


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiments_on_an_offloaded_model_give_the_plain_load_numbers(labs, tiny_path, name):
    plain, placed = labs
    fn, request, results = EXPERIMENTS[name]
    want, got = fn(request(str(tiny_path), "cpu"), lab=plain), fn(request(str(tiny_path), "auto"), lab=placed)
    assert "disk" in placed.cache.listing()[0]["layers"]
    if results is None:     # the structured result holds the numbers
        want, got = want.model_dump(mode="json"), got.model_dump(mode="json")
    else:
        want, got = plain.store.read_json(want.run_id, results), placed.store.read_json(got.run_id, results)
    pairs = list(zip(_numbers(want), _numbers(got), strict=True))
    assert len(pairs) > 5
    for (path, a), (path_b, b) in pairs:
        assert path == path_b
        if isinstance(a, float):
            assert b == pytest.approx(a, rel=1e-5, abs=1e-6), (name, path)
        else:
            assert a == b, (name, path)


def test_capture_of_an_offloaded_model_stores_the_plain_load_states(labs, tiny_path):
    plain, placed = labs
    request = {"model": str(tiny_path), "prompts": [PROMPT, "the law of"],
               "sites": ["blocks.*.hook_resid_post", "blocks.2.mlp.hook_post", "blocks.1.hook_attn_out"]}
    a = run_capture(CaptureRequest(**request), lab=plain)
    b = run_capture(CaptureRequest(**request, device="auto"), lab=placed)
    assert a.sites == b.sites and len(a.sites) == 6
    for site in a.sites:
        path = f"arrays/states/{site}.npy"
        torch.testing.assert_close(torch.from_numpy(placed.store.read_npy(b.run_id, path)),
                                   torch.from_numpy(plain.store.read_npy(a.run_id, path)), rtol=1e-5, atol=1e-6)
