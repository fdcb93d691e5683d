"""intervene's verdict never calls an edit causal or weak when a same-norm random direction moves log p as much,
and the summary says what the effect was compared with."""

import pytest

from neurotrace import InterveneRequest, run_intervene
from neurotrace.lab.intervention.controls import verdict
from neurotrace.lab.intervention.report import REPORT_FILE
from neurotrace.lab.intervention.schema import InterveneReport
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.testing.records import read_back

PROMPT = {"prompt": "the capital of france is", "target": "paris"}


def test_an_effect_smaller_than_the_largest_control_is_not_above_control():
    v, e, c, m = verdict([0.339], [-0.23, 0.05, -0.51])        # SKILL.md's example, once called "weak"
    assert v == "not above control"
    assert (e, c, m) == pytest.approx((0.339, 0.79 / 3, 0.51))


def test_an_effect_below_the_mean_control_is_not_above_control():
    assert verdict([0.1, -0.1], [0.3, -0.2, 0.4, 0.2])[0] == "not above control"


def test_an_effect_above_every_control_is_weak_below_twice_their_mean_and_causal_above():
    assert verdict([0.3], [0.2, 0.25, 0.1])[0] == "weak"            # mean 0.183: 2x = 0.367 > 0.3 > 0.25
    assert verdict([0.5], [0.2, 0.25, 0.1])[0] == "causal"
    assert verdict([0.5], [0.0, 0.0])[0] == "causal"                # no site changed, so no push to compare


def test_no_measurable_effect_wins_and_no_controls_means_no_verdict():
    assert verdict([0.01, -0.02], [0.5, 0.6])[0] == "no measurable effect"
    assert verdict([0.3], []) == (None, 0.3, None, None)
    assert verdict([], [0.1]) == (None, None, None, None)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("intervene_verdict") / "runs"))


def test_zeroing_a_residual_that_random_directions_of_its_norm_match_is_not_above_control(lab, tiny_gpt2):
    # the tiny GPT-2 is built from a seeded config: zeroing its last residual moves log p('paris') by ~0.19
    # nats, over 2x the controls' mean (the old rule said causal), but one of 32 random pushes does ~0.24
    res = run_intervene(InterveneRequest(model=str(tiny_gpt2), prompts=[PROMPT], max_new_tokens=0, controls=32,
                                         policies=[{"kind": "zero", "site": "blocks.1.hook_resid_post"}]),
                        lab=lab, reporter=NULL_REPORTER)
    assert res.verdict == "not above control"
    assert res.effect <= res.control_effect_max and res.effect >= 2 * res.control_effect
    assert f"Verdict: not above control (mean |change in log p('paris')| {res.effect:.3f} nats" in res.summary
    assert (f"random directions' mean {res.control_effect:.3f} and largest {res.control_effect_max:.3f}"
            in res.summary)
    rec = read_back(lab, res.run_id, REPORT_FILE, InterveneReport.model_validate)
    assert (rec.verdict, rec.control_effect_max) == (res.verdict, res.control_effect_max)
    assert "not above control" in rec.verdict_rules


def test_several_policies_are_applied_jointly_and_set_neurons_without_a_value_says_zero(lab, tiny_gpt2):
    res = run_intervene(InterveneRequest(model=str(tiny_gpt2), prompts=[PROMPT], max_new_tokens=0, controls=1,
                                         policies=[{"kind": "set_neurons", "neurons": ["1:3", "0:2"]},
                                                   {"kind": "zero", "site": "blocks.0.hook_attn_out"}]),
                        lab=lab, reporter=NULL_REPORTER)
    assert res.summary.startswith("2 policies applied jointly (set_neurons 1:3, 0:2 set to 0, zero;")
    one = run_intervene(InterveneRequest(model=str(tiny_gpt2), prompts=[PROMPT], max_new_tokens=0, controls=0,
                                         policies=[{"kind": "set_neurons", "neurons": ["1:3"], "value": 2.5}]),
                        lab=lab, reporter=NULL_REPORTER)
    assert one.summary.startswith("Applied 1 policy (set_neurons 1:3 set to 2.5) to 1 prompt(s)")
    assert "jointly" not in one.summary
