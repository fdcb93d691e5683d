"""capture generates on the KV cache and records exactly what recomputation records, per family."""

import json
import os

import numpy as np
import pytest

from neurotrace import CaptureRequest, run_capture
from neurotrace.lab.capture import (
    GenerationPlan,
    capture_info,
    force_recompute,
    load_trace_dataset,
    plan_step_edits,
)
from neurotrace.lab.capture.edits import AttentionKnockout, SetNeurons, ZeroAblation
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.testing.tiny import DECODER_FAMILIES, build_tiny

SITES = ["blocks.0.attn.hook_z", "blocks.1.mlp.hook_post", "blocks.1.hook_resid_post"]
PROMPTS = ["the king of france lives in the city of", "a red car on the road"]
EDITS = [{"kind": "zero", "site": "blocks.0.hook_mlp_out", "positions": [1, -1, 12]},
         {"kind": "zero_heads", "layer": 1, "heads": [0, 2]},
         {"kind": "set_neurons", "neurons": ["0:3", "1:5"], "value": 4.0},
         {"kind": "patch", "site": "blocks.1.hook_resid_pre", "source": "the cat is big", "positions": [0, 2]},
         {"kind": "knockout", "layers": [0], "query_positions": [-1, 11, 13], "key_positions": [0, 2, 10]}]


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """max over rows of max |a - b| / max |b| (the row's scale; elementwise ratios blow up near 0)."""
    scale = np.abs(b).max(axis=-1, keepdims=True).clip(1e-12)
    return float((np.abs(a - b) / scale).max())


def capture(lab, model, **kw):
    kw.setdefault("prompts", PROMPTS)
    return run_capture(CaptureRequest(model=str(model), sites=SITES, stop_at_eos=False, **kw), lab=lab,
                       reporter=NULL_REPORTER)


def both_paths(lab, model, **kw):
    cached = capture(lab, model, **kw)
    with force_recompute():
        recomputed = capture(lab, model, **kw)
    return cached, recomputed


def trace(lab, result):
    text = lab.store.artifact_path(result.run_id, "trace.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def assert_same_capture(lab, cached, recomputed, tol=1e-5):
    a, b = trace(lab, cached), trace(lab, recomputed)
    assert [ln["token_ids"] for ln in a] == [ln["token_ids"] for ln in b]
    assert [ln["rows"] for ln in a] == [ln["rows"] for ln in b]
    for site in SITES:
        x = np.array(load_trace_dataset(lab, cached.run_id, site).states)
        y = np.array(load_trace_dataset(lab, recomputed.run_id, site).states)
        assert x.shape == y.shape and max_rel(x, y) <= tol, site


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("generation") / "runs"))


@pytest.fixture(scope="module", params=DECODER_FAMILIES)
def tiny(request, tmp_path_factory):
    return build_tiny(request.param, tmp_path_factory.mktemp(request.param) / "m", seed=1)


@pytest.mark.parametrize("edits", [[], EDITS], ids=["no-edits", "edits"])
def test_cached_capture_records_the_same_states_and_tokens_as_recomputation(lab, tiny, edits):
    cached, recomputed = both_paths(lab, tiny, max_new_tokens=7, interventions=edits)
    assert_same_capture(lab, cached, recomputed)
    assert cached.n_rows == sum(len(ln["token_ids"]) for ln in trace(lab, cached))
    assert capture_info(lab.store, cached.run_id).generation.path == "kv_cache"
    assert capture_info(lab.store, recomputed.run_id).generation.path == "recompute"
    assert {ln["generation"] for ln in trace(lab, cached)} == {"kv_cache"}


def test_the_edits_change_the_recorded_states(lab, tiny_llama):
    plain, edited = capture(lab, tiny_llama, max_new_tokens=4), capture(lab, tiny_llama, max_new_tokens=4,
                                                                        interventions=EDITS)
    x = np.array(load_trace_dataset(lab, plain.run_id, SITES[-1]).states)
    y = np.array(load_trace_dataset(lab, edited.run_id, SITES[-1]).states)
    assert x.shape == y.shape and max_rel(x, y) > 1e-2


def test_an_episode_with_step_scoped_edits_takes_the_cache_and_matches_recomputation(lab, tiny_gpt2):
    episode = [{"text": "the cat is"}, {"text": "and the dog", "max_new_tokens": 3}, {"text": "is"}]
    edits = [{"kind": "zero", "site": "blocks.0.hook_attn_out", "steps": [1]},
             {"kind": "knockout", "query_positions": [-1], "key_positions": [0], "steps": [0, 2]}]
    cached, recomputed = both_paths(lab, tiny_gpt2, prompts=[], episode=episode, max_new_tokens=5,
                                    interventions=edits)
    assert_same_capture(lab, cached, recomputed)
    plan = capture_info(lab.store, cached.run_id).generation
    assert plan == GenerationPlan(path="kv_cache", reason="every forward of the step applies the same position-wise edits")


def test_prompts_without_generation_are_one_forward(lab, tiny_gpt2):
    result = capture(lab, tiny_gpt2, max_new_tokens=0)
    assert capture_info(lab.store, result.run_id).generation.path == "single_forward"


@pytest.mark.parametrize("spec,n,path", [
    (ZeroAblation(site="s"), 6, "kv_cache"),
    (ZeroAblation(site="s", steps=[2]), 6, "recompute"),                 # edits the prompt in forward 2 only
    (ZeroAblation(site="s", steps=[0], positions=[-1]), 6, "recompute"),  # the cache would keep forward 0's edit
    (ZeroAblation(site="s", steps=[0], positions=[-1]), 1, "single_forward"),
    (ZeroAblation(site="s", steps=[3, 4, 5], positions=[7]), 6, "kv_cache"),   # position 7 is fed by forward 3
    (ZeroAblation(site="s", steps=[3, 4], positions=[7]), 6, "recompute"),     # ... and reused by forward 5
    (SetNeurons(neurons=["0:1"], steps=[4, 5], positions=[9, 30]), 6, "kv_cache"),  # 30 is never fed
    (AttentionKnockout(query_positions=[8], key_positions=[0], steps=[4, 5]), 6, "kv_cache"),
    (AttentionKnockout(query_positions=[-1], key_positions=[0], steps=[1]), 6, "recompute"),
])
def test_step_scoped_edits_take_the_cache_only_where_it_is_exact(spec, n, path):
    """Prompt of 5 tokens: position q >= 5 is newest in forward q - 4 and reused by every later one."""
    plan = plan_step_edits([spec], 5, n, "causal", field="policies")
    assert plan["path"] == path
    if path == "recompute":
        assert plan["reason"].startswith("policies[0]")


def test_masked_models_recompute_and_forcing_recompute_says_so():
    assert plan_step_edits([], 5, 3, "masked", field="f")["path"] == "recompute"
    with force_recompute():
        assert "forced" in plan_step_edits([], 5, 3, "causal", field="f")["reason"]
    assert plan_step_edits([], 5, 3, "causal", field="f") == {"path": "kv_cache", "reason": "no edits"}


@pytest.mark.realmodel
def test_cached_capture_matches_recomputation_on_smollm2(lab):
    """Opt-in (NEUROTRACE_REAL_MODELS=1): 30 layers, GQA, RoPE; 6 new tokens under edits (intervene's
    real-model test covers unedited generation)."""
    name = "smollm2-135m-instruct"
    if not os.environ.get("NEUROTRACE_REAL_MODELS"):
        pytest.skip("set NEUROTRACE_REAL_MODELS=1 to run the installed real models")
    if not catalog.is_installed(name):
        pytest.skip(f"{name} is not installed (neurotrace models fetch {name})")
    edits = [{"kind": "set_neurons", "neurons": ["3:10", "20:99"], "value": 3.0},
             {"kind": "zero_heads", "layer": 5, "heads": [1, 4], "positions": [-1, 12]},
             {"kind": "knockout", "layers": [2, 3], "query_positions": [-1, 13], "key_positions": [1, 2]}]
    cached, recomputed = both_paths(lab, catalog.converted(name), max_new_tokens=6, interventions=edits,
                                    prompts=["The Eiffel Tower is located in the city of"])
    assert_same_capture(lab, cached, recomputed)
