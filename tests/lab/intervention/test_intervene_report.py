"""report.json is the JSON dump of its typed record, and the record holds what the result summarises."""

import csv

import pytest

from neurotrace import (
    CaptureRequest,
    FitSAERequest,
    InterveneRequest,
    run_capture,
    run_fit_sae,
    run_intervene,
)
from neurotrace.lab.intervention.figures import effects_figure
from neurotrace.lab.intervention.report import REPORT_FILE
from neurotrace.lab.intervention.schema import FeatureEffect, InterveneReport
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.lab.sae.schema import SAEMetrics
from neurotrace.testing.records import read_back

SITE = "blocks.1.hook_resid_pre"
PROMPTS = ["the cat is big", "a dog is small", "the king of france", "a red car on the road"] * 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_gpt2):
    lab = Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("intervene_report") / "runs"))
    cap = run_capture(CaptureRequest(model=str(tiny_gpt2), sites=[SITE], prompts=PROMPTS), lab=lab,
                      reporter=NULL_REPORTER)
    fit = run_fit_sae(FitSAERequest(capture_run_id=cap.run_id, n_steps=20, batch_size=16, k=4, splice_steps=0),
                      lab=lab, reporter=NULL_REPORTER)
    return lab, cap.run_id, fit.run_id


def test_report_json_is_the_dump_of_its_record_and_agrees_with_the_result(runs):
    lab, cap_run, sae_run = runs
    request = InterveneRequest(fit_sae_run_id=sae_run, max_new_tokens=3, controls=2, rank_features=3,
                               prompts=[{"prompt": "the capital of france is", "target": "paris", "foil": "rome"},
                                        "the cat"],
                               policies=[{"kind": "ablate_features", "features": [0, 1]},
                                         {"kind": "mean", "site": SITE, "capture_run_id": cap_run, "steps": [1]}])
    result = run_intervene(request, lab=lab, reporter=NULL_REPORTER)
    rec = read_back(lab, result.run_id, REPORT_FILE, InterveneReport.model_validate)
    assert rec.policies == list(request.policies) and rec.sampling == request.sampling
    assert rec.inputs == [sae_run, cap_run] and rec.sae_site == SITE
    assert (rec.verdict, rec.effect, rec.control_effect) == (result.verdict, result.effect, result.control_effect)
    assert rec.top_features == result.top_features and rec.n_text_changed == result.n_text_changed
    with_target, plain = rec.prompts
    assert with_target.baseline.p_target is not None and with_target.baseline.logit_diff is not None
    assert plain.baseline.p_target is None and plain.intervened.logit_diff is None
    assert rec.mean_p_target_change == pytest.approx(with_target.intervened.p_target - with_target.baseline.p_target)
    for entry in rec.prompts:
        assert entry.controls is not None and len(entry.controls.controls) == 2
        assert entry.top_features and len(entry.per_step) == 3
        assert [s.policies_active for s in entry.per_step] == [[0], [0, 1], [0]]
    rows = list(csv.DictReader(lab.store.artifact_path(result.run_id, "tables/per_step.csv").open(encoding="utf-8")))
    assert len(rows) == 6 and float(rows[1]["kl"]) == pytest.approx(with_target.per_step[1].kl)


def test_a_ranking_only_report_has_no_controls_and_no_verdict(runs):
    lab, _, sae_run = runs
    result = run_intervene(InterveneRequest(fit_sae_run_id=sae_run, prompts=["the cat is"], max_new_tokens=0,
                                            rank_features=2), lab=lab, reporter=NULL_REPORTER)
    rec = read_back(lab, result.run_id, REPORT_FILE, InterveneReport.model_validate)
    assert rec.policies == [] and rec.verdict is None and rec.mean_p_target_change is None
    assert rec.prompts[0].controls is None and rec.prompts[0].intervened == rec.prompts[0].baseline
    assert rec.generation.path == "single_forward"


def test_an_sae_fit_sae_judged_unusable_puts_a_caution_in_the_summary_and_the_report(runs):
    lab, _, sae_run = runs
    metrics = read_back(lab, sae_run, "sae_metrics.json", SAEMetrics.model_validate)
    assert metrics.verdict == "unusable"                  # 20 steps on a few dozen rows
    result = run_intervene(InterveneRequest(fit_sae_run_id=sae_run, prompts=[{"prompt": "the cat is", "target": "big"}],
                                            max_new_tokens=0, rank_features=2), lab=lab, reporter=NULL_REPORTER)
    caution = (f"the SAE was judged unusable by fit_sae ({', '.join(metrics.below_bar)}): its features may not be "
               "meaningful")
    assert result.sae_caution == caution and f"Caution: {caution}." in result.summary
    assert read_back(lab, result.run_id, REPORT_FILE, InterveneReport.model_validate).sae_caution == caution
    assert "nats of log p('big')" in result.summary       # a ranking-only pass names the target token


def test_a_run_without_an_sae_has_no_caution_and_old_reports_still_read(runs, tiny_gpt2):
    lab, _, sae_run = runs
    result = run_intervene(InterveneRequest(model=str(tiny_gpt2), prompts=["the cat is"], max_new_tokens=0,
                                            policies=[{"kind": "zero", "site": SITE}]), lab=lab, reporter=NULL_REPORTER)
    assert result.sae_caution is None and "Caution" not in result.summary
    old = lab.store.read_json(result.run_id, REPORT_FILE)
    del old["sae_caution"], old["control_effect_max"]
    assert InterveneReport.model_validate(old).sae_caution is None


def test_the_feature_figure_says_how_features_were_ranked_not_that_they_are_causal():
    import matplotlib.pyplot as plt

    fig = effects_figure([FeatureEffect(feature=3, effect=-0.2, activation=1.0)], 4, "log p('big')")
    ax = fig.axes[0]
    assert ax.get_title() == "SAE features ranked by single-feature ablation (n=4 prompts)"
    assert "log p('big')" in ax.get_xlabel() and "causal" not in ax.get_title()
    plt.close(fig)
