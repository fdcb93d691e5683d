"""intervene generates on the KV cache wherever that is exact, and then equals recomputation."""

import os

import pytest

from neurotrace import (
    CaptureRequest,
    FitSAERequest,
    InterveneRequest,
    run_capture,
    run_fit_sae,
    run_intervene,
)
from neurotrace.lab.capture import force_recompute
from neurotrace.lab.intervention.report import REPORT_FILE
from neurotrace.lab.intervention.schema import InterveneReport
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.testing.tiny import DECODER_FAMILIES, build_tiny, word_prompts

PROMPT = "the king of france lives in the city of"          # 9 tokens: generated positions are 9, 10, ...
CASES = [{"prompt": PROMPT, "target": "paris", "foil": "rome"}, "a red car on the road"]
EDITS = [{"kind": "zero", "site": "blocks.0.hook_mlp_out", "positions": [1, -1, 11]},
         {"kind": "zero_heads", "layer": 1, "heads": [0, 2]},
         {"kind": "set_neurons", "neurons": ["0:3", "1:5"], "value": 4.0},
         {"kind": "patch", "site": "blocks.1.hook_resid_pre", "source": "the cat is big", "positions": [0, 2]},
         {"kind": "knockout", "layers": [0], "query_positions": [-1, 11], "key_positions": [0, 2, 10]},
         # position 12 is fed by forward 4 (for the 9-token prompt): steps 4.. cover every forward reusing it
         {"kind": "set_neurons", "neurons": ["1:7"], "value": -3.0, "positions": [12], "steps": [4, 5, 6, 7]}]


def report_of(lab, run_id) -> InterveneReport:
    return InterveneReport.model_validate(lab.store.read_json(run_id, REPORT_FILE))


def intervene(lab, model, **kw):
    kw = {"prompts": CASES, "max_new_tokens": 8, "controls": 0, "rank_features": 0, **kw}
    result = run_intervene(InterveneRequest(model=str(model), **kw), lab=lab, reporter=NULL_REPORTER)
    return result, report_of(lab, result.run_id)


def both_paths(lab, model, **kw):
    cached = intervene(lab, model, **kw)
    with force_recompute():
        recomputed = intervene(lab, model, **kw)
    return cached, recomputed


def assert_same_report(a: InterveneReport, b: InterveneReport, rel: float = 1e-5) -> None:
    close = {"rel": rel, "abs": 1e-7}
    for x, y in zip(a.prompts, b.prompts, strict=True):
        assert x.baseline.tokens == y.baseline.tokens and x.intervened.tokens == y.intervened.tokens
        for side in ("baseline", "intervened"):
            for key in ("p_target", "logit_diff"):
                xv, yv = getattr(getattr(x, side), key), getattr(getattr(y, side), key)
                assert (xv is None) == (yv is None)
                if yv is not None:
                    assert xv == pytest.approx(yv, **close)
        assert len(x.per_step) == len(y.per_step)
        for s, t in zip(x.per_step, y.per_step, strict=True):
            assert s.baseline_token == t.baseline_token and s.policies_active == t.policies_active
            assert s.p_token_baseline == pytest.approx(t.p_token_baseline, **close)
            assert s.p_token_intervened == pytest.approx(t.p_token_intervened, **close)
            assert s.kl == pytest.approx(t.kl, rel=1e-4, abs=1e-6)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("generation") / "runs"))


@pytest.fixture(scope="module")
def sae(lab, tiny_gpt2):
    """A small SAE on the tiny GPT-2's layer-1 residual stream."""
    site = "blocks.1.hook_resid_pre"
    prompts = word_prompts(20, 8, seed=1)
    cap = run_capture(CaptureRequest(model=str(tiny_gpt2), sites=[site], prompts=prompts), lab=lab,
                      reporter=NULL_REPORTER)
    fit = run_fit_sae(FitSAERequest(capture_run_id=cap.run_id, n_steps=60, batch_size=64, k=4, splice_steps=0),
                      lab=lab, reporter=NULL_REPORTER)
    return lab, fit.run_id


@pytest.fixture(scope="module", params=DECODER_FAMILIES)
def tiny(request, tmp_path_factory):
    return build_tiny(request.param, tmp_path_factory.mktemp(request.param) / "m", seed=1)


@pytest.mark.parametrize("policies", [[], EDITS], ids=["no-edits", "edits"])
def test_cached_intervene_equals_recomputation_for_every_decoder_family(lab, tiny, policies):
    (res, cached), (_, recomputed) = both_paths(lab, tiny, policies=policies)
    assert_same_report(cached, recomputed)
    assert cached.generation.path == "kv_cache" and recomputed.generation.path == "recompute"
    assert [e.generation.path for e in cached.prompts] == ["kv_cache", "kv_cache"]
    assert "recomputed" not in res.summary
    if policies:
        assert any(s.kl > 1e-4 for e in cached.prompts for s in e.per_step)


def test_steps_the_edits_never_reach_have_zero_kl_on_the_cached_path(lab, tiny_llama):
    """Position 11 is fed by forward 3; steps 0..2 never see an edit, so their KL is 0 exactly (the
    teacher-forced runs are one forward each, edited and not, over the same tokens)."""
    late = [{"kind": "set_neurons", "neurons": [f"0:{i}" for i in range(64)], "positions": [11, 12],
             "steps": [3, 4, 5]}]
    _, report = intervene(lab, tiny_llama, prompts=[PROMPT], policies=late, max_new_tokens=6)
    steps = report.prompts[0].per_step
    assert report.generation.path == "kv_cache" and len(steps) == 6
    assert [s.kl == 0 for s in steps] == [True, True, True, False, False, False]


def test_a_step_dependent_edit_recomputes_and_says_why(lab, tiny_gpt2):
    """steps=[2] on every position: recomputation edits the prompt in forward 2 only, which the cache
    cannot honour; the run recomputes, names the policy, and equals the forced reference exactly."""
    policies = [{"kind": "zero", "site": "blocks.0.hook_mlp_out"},
                {"kind": "set_neurons", "neurons": ["0:1", "0:2"], "value": 5.0, "steps": [2]}]
    (res, report), (_, reference) = both_paths(lab, tiny_gpt2, policies=policies, prompts=[PROMPT])
    plan = report.generation
    assert plan.path == "recompute" and plan.reason.startswith("policies[1] (set_neurons) acts at steps [2]")
    assert "every forward recomputed the whole sequence" in res.summary
    assert report.prompts[0].generation == plan
    assert [e.per_step for e in report.prompts] == [e.per_step for e in reference.prompts]
    assert [s.policies_active for s in report.prompts[0].per_step][:4] == [[0], [0], [0, 1], [0]]


def test_sampling_reuses_the_seed_on_the_cached_path(lab, tiny_llama):
    sampling = {"kind": "sample", "temperature": 1.2, "top_k": None}
    (_, cached), (_, recomputed) = both_paths(lab, tiny_llama, policies=EDITS[:3], sampling=sampling, seed=4)
    assert_same_report(cached, recomputed)


def test_sae_feature_policies_on_the_kv_cache_path_equal_recomputation(sae):
    lab, sae_run = sae
    policies = [{"kind": "clamp_features", "features": [1, 2], "value": 3.0},
                {"kind": "ablate_features", "features": [0, 4], "positions": [-1, 7]},
                {"kind": "patch_features", "features": [3], "source": "the dog", "align": "last", "positions": [6, 8]},
                {"kind": "patch_features", "features": [5, 6], "source": "a red car on the road",
                 "positions": [0, 1, 5, 7]}]
    request = InterveneRequest(fit_sae_run_id=sae_run, prompts=[{"prompt": PROMPT, "target": "paris"},
                                                                "a red car on the road"],
                               max_new_tokens=6, controls=0, rank_features=0, policies=policies)
    cached = report_of(lab, run_intervene(request, lab=lab, reporter=NULL_REPORTER).run_id)
    with force_recompute():
        again = run_intervene(request, lab=lab, reporter=NULL_REPORTER)
    recomputed = report_of(lab, again.run_id)
    assert cached.generation.path == "kv_cache" and recomputed.generation.path == "recompute"
    assert_same_report(cached, recomputed)
    assert any(s.kl > 1e-4 for e in cached.prompts for s in e.per_step)


@pytest.mark.realmodel
def test_cached_intervene_equals_recomputation_on_smollm2(lab):
    """Opt-in (NEUROTRACE_REAL_MODELS=1): the baseline is unedited generation, the intervened run
    generates under edits, the per-step metrics are teacher-forced; 4 new tokens."""
    name = "smollm2-135m-instruct"
    if not os.environ.get("NEUROTRACE_REAL_MODELS"):
        pytest.skip("set NEUROTRACE_REAL_MODELS=1 to run the installed real models")
    if not catalog.is_installed(name):
        pytest.skip(f"{name} is not installed (neurotrace models fetch {name})")
    policies = [{"kind": "set_neurons", "neurons": ["3:10", "20:99"], "value": 6.0},
                {"kind": "zero_heads", "layer": 5, "heads": [1, 4], "positions": [-1, 12]},
                {"kind": "knockout", "layers": [2, 3], "query_positions": [-1, 13], "key_positions": [1, 2]}]
    case = {"prompt": "The Eiffel Tower is located in the city of", "target": "Paris", "foil": "Rome"}
    (_, cached), (_, recomputed) = both_paths(lab, catalog.converted(name), prompts=[case], policies=policies,
                                              max_new_tokens=4)
    assert cached.generation.path == "kv_cache"
    assert_same_report(cached, recomputed)
