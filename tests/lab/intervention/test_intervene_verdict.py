"""intervene's verdict: structure-matched controls, the signed metric scaled to the task, and broken models flagged.

The planted-circuit transformer's answer runs through head 2.0 only (head 2.1 is zero), so zeroing 2.0 must read
`causal` against the same-layer head, zeroing a head off the route must not, and zeroing the last residual of
fact-gpt2 must read `destructive`."""

import pytest

from neurotrace import InterveneRequest, run_intervene
from neurotrace.lab.benchmark.planted_model import CAPITALS, COUNTRIES, TEMPLATE, build_planted
from neurotrace.lab.intervention.controls import verdict
from neurotrace.lab.intervention.report import REPORT_FILE
from neurotrace.lab.intervention.schema import InterveneReport
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.testing.records import read_back

PROMPT = {"prompt": "the capital of france is", "target": "paris"}
PLANTED = [{"prompt": TEMPLATE.format(c), "target": t} for c, t in zip(COUNTRIES[:2], CAPITALS[:2], strict=True)]


def test_an_effect_no_larger_than_the_largest_structure_control_is_not_above_control():
    j = verdict([-0.339], [-0.3], {"same-layer heads": [[-0.23, 0.05, -0.51]]})
    assert j.verdict == "not above control" and j.family == "same-layer heads"
    assert (j.control_mean, j.control_max) == pytest.approx((0.74 / 3, 0.51))     # in the edit's direction


def test_the_structure_matched_family_decides_before_random_directions():
    # the IOI case: the random directions' largest (0.85) beats the effect, the same-layer heads (~0) do not
    fams = {"random directions": [[0.3, -0.85, 0.1]], "same-layer heads": [[0.02, -0.01, 0.03]]}
    j = verdict([-0.647], [-0.5], fams)
    assert (j.verdict, j.family) == ("causal", "same-layer heads")
    assert list(j.distributions) == ["same-layer heads", "random directions"]
    assert j.distributions["random directions"] == pytest.approx((-0.45 / 3, -0.85, 0.3, 3))


def test_controls_that_move_the_metric_the_other_way_do_not_count_against_the_edit():
    # gemma's IOI: zeroing 11:3 + 12:1 cuts the difference by 2.6; zeroing other heads of those layers raises it
    j = verdict([-2.58], [-0.62], {"same-layer heads": [[2.33, 2.18, -0.18], [3.79, 3.89, 0.81]]})
    assert (j.verdict, j.control_max) == ("causal", 0.0)
    assert verdict([0.17], [0.2], {"same-layer heads": [[2.5, -1.0]]}).verdict == "not above control"


def test_a_small_raise_above_controls_is_weak_not_causal_and_a_negligible_one_no_measurable_effect():
    # the control head that raised p(Paris) by 0.066 nats: above its controls but 10% of the headroom
    assert verdict([0.066], [0.1], {"same-layer heads": [[0.01, 0.0, 0.02]]}).verdict == "weak"
    assert verdict([0.066], [0.03], {"same-layer heads": [[0.01]]}).verdict == "no measurable effect"


def test_destructive_wins_and_no_controls_means_no_verdict():
    assert verdict([-5.0], [-0.99], {"same-layer heads": [[0.0]]}, destructive=True).verdict == "destructive"
    assert verdict([0.3], [0.5], {}).verdict is None
    assert verdict([], [], {"same-layer heads": [[0.1]]}).verdict is None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("intervene_verdict") / "runs"))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted(tmp_path_factory.mktemp("planted") / "planted-gpt2")


def _zero_heads(lab, planted, layer, head):
    return run_intervene(InterveneRequest(model=str(planted.path), prompts=PLANTED, max_new_tokens=0, controls=2,
                                          policies=[{"kind": "zero_heads", "layer": layer, "heads": [head]}]),
                         lab=lab, reporter=NULL_REPORTER)


def test_the_planted_route_head_is_causal_against_its_same_layer_head(lab, planted):
    res = _zero_heads(lab, planted, planted.head_layer, planted.head)
    assert (res.verdict, res.control_family, res.direction, res.effect_size) == ("causal", "same-layer heads",
                                                                                 "lowers", "large")
    assert res.effect < -1.0 and res.control_effect_max < 0.01
    assert {c.family for c in res.controls} == {"same-layer heads", "heads of any layer", "random directions"}
    assert "It lowers log p(target) by" in res.summary and "Verdict: causal against same-layer heads" in res.summary
    assert "top-1 next token changed on 2 of 2; no text generated (max_new_tokens=0)" in res.summary
    assert "generated text(s) changed" not in res.summary
    rec = read_back(lab, res.run_id, REPORT_FILE, InterveneReport.model_validate)
    assert rec.verdict == "causal" and rec.damage is not None and not rec.damage.destructive
    assert rec.n_top1_changed == 2 and "20%" in rec.verdict_rules


def test_a_head_off_the_route_is_not_causal_and_its_controls_show_the_route(lab, planted):
    off = _zero_heads(lab, planted, planted.head_layer, 1 - planted.head)
    assert off.verdict == "no measurable effect"
    same = next(c for c in off.controls if c.family == "same-layer heads")
    assert same.min < -1.0                     # the one other head of the layer is the route


def test_zeroing_fact_gpt2s_last_residual_reads_destructive(lab):
    res = run_intervene(InterveneRequest(model="fact-gpt2", max_new_tokens=6, controls=1,
                                         prompts=[{"prompt": "The capital of Drosberesh is", "target": "Zaentrourgrad"}],
                                         policies=[{"kind": "zero", "site": "blocks.3.hook_resid_post"}]),
                        lab=lab, reporter=NULL_REPORTER)
    assert res.verdict == "destructive" and res.damage.destructive
    assert res.damage.kl > 1.0 and res.damage.generations_collapsed == 1
    assert "Edit on neutral text: destructive (KL on neutral text" in res.summary
    assert "breaks the model on neutral text" in res.next


def test_with_a_foil_the_metric_is_the_logit_difference_and_its_sign_is_stated(lab, tiny_gpt2):
    res = run_intervene(InterveneRequest(model=str(tiny_gpt2), max_new_tokens=0, controls=2,
                                         prompts=[{**PROMPT, "foil": "rome"}],
                                         policies=[{"kind": "zero", "site": "blocks.1.hook_resid_post"}]),
                        lab=lab, reporter=NULL_REPORTER)
    assert res.metric == "logit('paris') - logit('rome')"
    rec = read_back(lab, res.run_id, REPORT_FILE, InterveneReport.model_validate)
    p = rec.prompts[0]
    assert p.controls.effect == pytest.approx(p.intervened.logit_diff - p.baseline.logit_diff, abs=1e-4)
    assert f"It {res.direction} logit('paris') - logit('rome') by {abs(res.effect):.3f} logits" in res.summary


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
