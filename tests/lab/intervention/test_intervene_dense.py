"""intervene and dense features: rank_features draws non-dense candidates by the dictionary's own density,
reports each ranked feature's density, ranks exactly as before when the planted dense feature is taken away (the
control), and says so when an edit hits a dense feature; a dictionary without density ranks every feature and
says the density is unknown."""

import numpy as np
import pytest

from neurotrace import (
    CaptureRequest,
    FitSAERequest,
    InterveneRequest,
    run_capture,
    run_fit_sae,
    run_intervene,
)
from neurotrace.lab.intervention.controls import Judgement
from neurotrace.lab.intervention.report import _dense_text
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.lab.sae import load_dictionary
from neurotrace.testing.dense import planted_dense
from neurotrace.testing.tiny import word_prompts

SITE = "blocks.1.hook_resid_pre"
PROMPTS = [{"prompt": "the capital of france is", "target": "paris"}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_gpt2):
    lab = Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("intervene_dense") / "runs"))
    cap = run_capture(CaptureRequest(model=str(tiny_gpt2), sites=[SITE], prompts=word_prompts(20, 8, seed=1)),
                      lab=lab, reporter=NULL_REPORTER)
    fit = run_fit_sae(FitSAERequest(capture_run_id=cap.run_id, n_steps=100, batch_size=64, k=4, splice_steps=0),
                      lab=lab, reporter=NULL_REPORTER)
    return lab, fit.run_id


def intervene(lab, **kw):
    base = {"prompts": PROMPTS, "max_new_tokens": 0, "rank_features": 8, "controls": 0}
    return run_intervene(InterveneRequest.model_validate({**base, **kw}), lab=lab, reporter=NULL_REPORTER)


def test_the_fit_run_carries_its_density_in_saelens_sparsity_file(setup):
    lab, fit = setup
    d = load_dictionary(lab, fit)
    table = np.genfromtxt(lab.store.artifact_path(fit, "tables/feature_density.csv"), delimiter=",", names=True)
    assert d.density is not None and "training and held-out rows" in d.density.source
    np.testing.assert_allclose(d.density.rates, table["fire_rate"], rtol=1e-5, atol=1e-9)
    assert lab.store.artifact_path(fit, "saelens/sparsity.safetensors").is_file()


def test_a_planted_dense_feature_is_no_candidate_and_the_rest_rank_unchanged(setup):
    lab, fit = setup
    ref, planted = planted_dense(lab, fit, "dense_sae")
    plain = intervene(lab, fit_sae_run_id=fit)
    with_dense = intervene(lab, dictionary=ref)
    assert planted not in [f.feature for f in with_dense.top_features]
    # control: the same features, the same effects, as the dictionary without the planted feature
    assert [f.feature for f in with_dense.top_features] == [f.feature for f in plain.top_features]
    assert [f.effect for f in with_dense.top_features] == pytest.approx([f.effect for f in plain.top_features],
                                                                         abs=1e-5)
    rates = load_dictionary(lab, fit).density.rates
    assert [f.density for f in plain.top_features] == pytest.approx([rates[f.feature] for f in plain.top_features])
    assert all(f.density <= 0.1 for f in with_dense.top_features)
    assert "ranked among non-dense features (density from sparsity.safetensors" in with_dense.summary
    everything = intervene(lab, dictionary=ref, include_dense=True)
    ranked = {f.feature: f for f in everything.top_features}
    assert planted in ranked and ranked[planted].density == pytest.approx(1.0)   # the loudest feature on the prompt
    unknown_ref, _ = planted_dense(lab, fit, "dense_sae_no_stats", sparsity=False)
    unknown = intervene(lab, dictionary=unknown_ref)
    assert planted in [f.feature for f in unknown.top_features]          # unknown density: nothing left out
    assert unknown.density_source is None and "density unknown" in unknown.summary
    assert all(f.density is None for f in unknown.top_features)


def test_ablating_a_dense_feature_says_so_beside_the_verdict(setup):
    lab, fit = setup
    ref, planted = planted_dense(lab, fit, "dense_sae")
    res = intervene(lab, dictionary=ref, policies=[{"kind": "ablate_features", "features": [planted]}], controls=1,
                    max_new_tokens=2, rank_features=0)
    assert res.dense_edited == [planted]
    assert f"includes dense features (f{planted} (100% of tokens))" in res.summary
    assert (res.verdict == "destructive") == ("the destructive verdict may come from them" in res.summary)
    # the destructive wording, on the same dictionary and edit with the verdict set
    request = InterveneRequest(dictionary=ref, prompts=PROMPTS, rank_features=0,
                               policies=[{"kind": "ablate_features", "features": [planted, 0]}])
    broken = Judgement("destructive", -3.0, -0.9, None, None, None, {})
    text = _dense_text(request, load_dictionary(lab, ref), broken)
    assert f"(f{planted} (100% of tokens))" in text and "the destructive verdict may come from them" in text
    assert "f0 " not in text
    sparse = intervene(lab, dictionary=ref, policies=[{"kind": "ablate_features", "features": [0]}], controls=1,
                       rank_features=0)
    assert sparse.dense_edited == [] and "includes dense" not in sparse.summary


def test_a_feature_edit_at_every_position_leaves_out_the_rows_the_dictionary_was_not_trained_on(setup):
    """positions=null edits exactly fit_sae's rows (here: not position 0): the same numbers as listing the other
    positions, and not those of an edit that includes position 0 (the control)."""

    from neurotrace.lab.capture.edits import clean_text_acts
    from neurotrace.lab.intervention.ranking import unfitted_positions
    from neurotrace.lab.model.weights.loading import ModelRef

    lab, fit = setup
    d = load_dictionary(lab, fit)
    prompt = PROMPTS[0]["prompt"]
    with lab.cache.lease(ModelRef(model=d.cfg.model)) as lm:
        ids = list(lm.tokenizer(prompt).input_ids)
        codes = d.encode(clean_text_acts(lm)(SITE, prompt))
        assert unfitted_positions(lm, d, ids) == {0}
    feats = sorted({int(i) for i in codes[0].topk(4).indices} | {int(i) for i in codes[-1].topk(4).indices})
    n = len(ids)

    def edit(positions):
        policy = {"kind": "ablate_features", "features": feats, **({"positions": positions} if positions else {})}
        return intervene(lab, fit_sae_run_id=fit, policies=[policy], rank_features=0)

    every, listed, with0 = edit(None), edit(list(range(1, n))), edit(list(range(n)))
    assert every.mean_p_target_change is not None and every.mean_p_target_change != 0
    assert every.mean_p_target_change == listed.mean_p_target_change
    assert abs(with0.mean_p_target_change - every.mean_p_target_change) > 1e-7
    assert "leave out position 0, special tokens and attention-sink rows" in every.summary
    assert "leave out position 0" not in listed.summary
