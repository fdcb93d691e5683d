"""intervene: no-op clamps, patch/unpatch, step filter, component edits, feature ranking, reproducibility."""


import pytest
import torch

from neurotrace import (
    CaptureRequest,
    FitSAERequest,
    InterveneRequest,
    PlotRequest,
    run_capture,
    run_fit_sae,
    run_intervene,
    run_plot,
)
from neurotrace.lab.capture import StepInfo, clean_text_acts
from neurotrace.lab.capture.edits import PatchActivations
from neurotrace.lab.errors import InputError
from neurotrace.lab.intervention.policies import (
    AblateFeatures,
    ClampFeatures,
    PatchFeatures,
    PolicyContext,
)
from neurotrace.lab.intervention.report import REPORT_FILE
from neurotrace.lab.intervention.run import policy_hooks
from neurotrace.lab.intervention.schema import InterveneReport
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.lab.sae.run import load_sae_run
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.tiny import word_prompts

SITE = "blocks.1.hook_resid_pre"
PROMPT = "the capital of france is"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_gpt2):
    lab = Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("intervene") / "runs"))
    prompts = word_prompts(20, 8, seed=1)
    cap = run_capture(CaptureRequest(model=str(tiny_gpt2), sites=[SITE], prompts=prompts), lab=lab,
                      reporter=NULL_REPORTER)
    fit = run_fit_sae(FitSAERequest(capture_run_id=cap.run_id, n_steps=100, batch_size=64, k=4, splice_steps=0),
                      lab=lab, reporter=NULL_REPORTER)
    return lab, fit.run_id, tiny_gpt2


def report_of(lab, run_id) -> InterveneReport:
    return InterveneReport.model_validate(lab.store.read_json(run_id, REPORT_FILE))


def logits_with(lab, model, sae, policies, text=PROMPT, step=0, sources=None):
    with lab.cache.lease(ModelRef(model=str(model))) as lm:
        ids = lm.tokenizer(text, return_tensors="pt").input_ids
        ctx = PolicyContext(prompt_len=ids.shape[1], n_heads=4, text_acts=clean_text_acts(lm))
        info = StepInfo(step, ids.shape[1])
        with torch.no_grad(), hooked(lm.model, lm.adapter, policy_hooks(policies, step, sae, ctx, lm, info, None)):
            return lm.model(input_ids=ids).logits


def source_acts(lab, model, text):
    return None


def test_clamping_a_feature_to_its_own_value_is_a_no_op(setup):
    lab, sae_run, model = setup
    sae = load_sae_run(lab, sae_run)
    captured = {}

    def keep(act, site):
        captured["h"] = act.clone()

    with lab.cache.lease(ModelRef(model=str(model))) as lm:
        ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids
        with torch.no_grad(), hooked(lm.model, lm.adapter, {SITE: keep}):
            base = lm.model(input_ids=ids).logits
    acts = sae.encode(captured["h"])[0, 2]                             # position 2
    feature = int(acts.argmax())
    same = logits_with(lab, model, sae, [ClampFeatures(features=[feature], value=float(acts[feature]), positions=[2])])
    assert torch.equal(same, base)
    moved = logits_with(lab, model, sae, [ClampFeatures(features=[feature], value=float(acts[feature]) + 5,
                                                        positions=[2])])
    assert not torch.allclose(moved, base)


def test_patch_then_unpatch_restores_the_baseline(setup):
    lab, sae_run, model = setup
    sae = load_sae_run(lab, sae_run)
    base = logits_with(lab, model, sae, [])
    src = source_acts(lab, model, "a dog is small and red")
    patched = logits_with(lab, model, sae, [PatchActivations(site=SITE, source="a dog is small and red"),
                                            PatchFeatures(features=[0, 1, 2], source="a dog is small and red")],
                          sources=src)
    after = logits_with(lab, model, sae, [])
    assert not torch.allclose(patched, base) and torch.equal(after, base)
    own = logits_with(lab, model, sae, [PatchActivations(site=SITE, source=PROMPT)], sources=source_acts(lab, model, PROMPT))
    assert torch.equal(own, base)                                      # patching from itself changes nothing


def test_policies_outside_their_steps_do_nothing_and_per_step_kl_shows_it(setup):
    lab, sae_run, model = setup
    sae = load_sae_run(lab, sae_run)
    ablate = AblateFeatures(features=list(range(sae.cfg.d_sae)), steps=[2])
    assert torch.equal(logits_with(lab, model, sae, [ablate], step=1), logits_with(lab, model, sae, []))
    res = run_intervene(InterveneRequest(fit_sae_run_id=sae_run, prompts=[PROMPT], max_new_tokens=4, rank_features=0,
                                         policies=[{"kind": "set_neurons", "neurons": [f"0:{i}" for i in range(64)],
                                                    "steps": [2]}]), lab=lab, reporter=NULL_REPORTER)
    steps = report_of(lab, res.run_id).prompts[0].per_step
    assert [s.kl > 0 for s in steps] == [False, False, True, False]
    assert [s.policies_active for s in steps] == [[], [], [0], []]


def test_setting_every_neuron_to_zero_equals_an_mlp_output_of_just_its_bias(setup):
    lab, sae_run, model = setup
    res = run_intervene(InterveneRequest(model=str(model), prompts=[{"prompt": PROMPT, "target": "paris"}],
                                         max_new_tokens=0, policies=[{"kind": "set_neurons",
                                                                      "neurons": [f"1:{i}" for i in range(128)]}]),
                        lab=lab, reporter=NULL_REPORTER)
    with lab.cache.lease(ModelRef(model=str(model))) as lm:
        bias = lm.model.transformer.h[1].mlp.c_proj.bias
        ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids
        with torch.no_grad(), hooked(lm.model, lm.adapter, {"blocks.1.hook_mlp_out": lambda a, site: bias.expand_as(a).clone()}):
            probs = lm.model(input_ids=ids).logits[0, -1].softmax(-1)
        paris = lm.tokenizer(" paris", add_special_tokens=False).input_ids[0]
    assert report_of(lab, res.run_id).prompts[0].intervened.p_target == pytest.approx(float(probs[paris]), rel=1e-5)


def test_ranked_feature_effects_match_ablating_each_feature_through_a_policy(setup):
    lab, sae_run, model = setup
    sae = load_sae_run(lab, sae_run)
    res = run_intervene(InterveneRequest(fit_sae_run_id=sae_run, prompts=[{"prompt": PROMPT, "target": "paris"}],
                                         max_new_tokens=0, rank_features=5,
                                         policies=[{"kind": "ablate_features", "features": [0]}]),
                        lab=lab, reporter=NULL_REPORTER)
    ranked = report_of(lab, res.run_id).prompts[0].top_features
    assert ranked and [abs(f.effect) for f in ranked] == sorted((abs(f.effect) for f in ranked), reverse=True)
    base = logits_with(lab, model, sae, [])[0, -1].log_softmax(-1)
    with lab.cache.lease(ModelRef(model=str(model))) as lm:
        paris = lm.tokenizer(" paris", add_special_tokens=False).input_ids[0]
    n = len(lm.tokenizer(PROMPT).input_ids)
    for entry in ranked[:2]:   # ranked where the dictionary reads (fitted_positions: here all but position 0)
        cut = logits_with(lab, model, sae, [AblateFeatures(features=[entry.feature], positions=list(range(1, n)))])
        cut = cut[0, -1].log_softmax(-1)
        assert entry.effect == pytest.approx(float(cut[paris] - base[paris]), abs=1e-5)


@pytest.mark.parametrize("sampling", [{"kind": "greedy"}, {"kind": "sample", "temperature": 1.5, "top_k": None}])
def test_rerunning_with_the_same_seed_reproduces_report_json_exactly(setup, sampling):
    lab, sae_run, model = setup
    request = InterveneRequest(fit_sae_run_id=sae_run, prompts=[{"prompt": PROMPT, "target": "paris", "foil": "rome"},
                                                         "the cat"],
                               max_new_tokens=5, sampling=sampling, seed=3, rank_features=4,
                               policies=[{"kind": "clamp_features", "features": [1, 2], "value": 3.0},
                                         {"kind": "zero_heads", "layer": 0, "heads": [1], "steps": [0, 1]},
                                         {"kind": "patch_features", "features": [3], "source": "the dog",
                                          "align": "last"}])
    runs = [run_intervene(request, lab=lab, reporter=NULL_REPORTER) for _ in range(2)]
    a, b = (lab.store.artifact_path(r.run_id, "report.json").read_bytes() for r in runs)
    assert a == b
    report = report_of(lab, runs[0].run_id)
    assert report.seed == 3 and report.inputs[0] == sae_run and report.prompts[0].baseline.logit_diff is not None
    assert sae_run in lab.store.manifest(runs[0].run_id).inputs


@pytest.mark.parametrize("policy,field", [
    ({"kind": "ablate_features", "features": [999]}, "policies"),
    ({"kind": "set_neurons", "neurons": ["0:128"]}, "policies"),
    ({"kind": "set_neurons", "neurons": ["5:1"]}, "policies"),
    ({"kind": "zero_heads", "layer": 0, "heads": [4]}, "policies"),
    ({"kind": "patch", "site": "blocks.4.hook_resid_pre", "source": "the cat"}, "policies"),
    ({"kind": "zero", "site": SITE, "positions": [40]}, "policies"),
    ({"kind": "zero", "site": SITE, "positions": [-6]}, "policies"),
])
def test_policy_input_errors_name_the_field(setup, policy, field):
    lab, sae_run, _ = setup
    with raises_lab_error(InputError) as err:
        run_intervene(InterveneRequest(fit_sae_run_id=sae_run, prompts=[PROMPT], policies=[policy]), lab=lab,
                      reporter=NULL_REPORTER)
    assert err.value.field == field


def test_missing_sae_model_and_wrong_runs_are_input_errors(setup, tiny_bert):
    lab, sae_run, model = setup
    feature = [{"kind": "ablate_features", "features": [0]}]
    neurons = [{"kind": "set_neurons", "neurons": ["0:0"]}]
    capture_run = lab.store.manifest(sae_run).inputs[0]
    cases = [(dict(model=str(model), policies=feature), "fit_sae_run_id"), (dict(policies=neurons), "model"),
             (dict(fit_sae_run_id=capture_run, policies=neurons), "fit_sae_run_id"),
             (dict(model=str(tiny_bert), policies=neurons, max_new_tokens=2), "max_new_tokens")]
    for kw, field in cases:
        with raises_lab_error(InputError) as err:
            run_intervene(InterveneRequest(prompts=[PROMPT], **kw), lab=lab, reporter=NULL_REPORTER)
        assert err.value.field == field


def test_an_empty_policy_list_is_a_ranking_only_pass(setup):
    lab, sae_run, _ = setup
    res = run_intervene(InterveneRequest(fit_sae_run_id=sae_run, prompts=[{"prompt": PROMPT, "target": "paris"}],
                                         max_new_tokens=2, rank_features=4), lab=lab, reporter=NULL_REPORTER)
    assert res.verdict is None and "Ranking-only" in res.summary and res.top_features
    effects = [abs(f.effect) for f in res.top_features]
    assert effects == sorted(effects, reverse=True) and "nats" in res.summary
    redrawn = run_plot(PlotRequest(run_id=res.run_id), lab=lab)   # plot redraws the ranking from report.json
    assert redrawn.kinds == ["feature_effects"] and len(redrawn.figures) == len(res.figures) == 1


def test_verdicts_compare_the_effect_with_same_norm_random_directions_and_other_positions(setup):
    lab, sae_run, model = setup
    strong = run_intervene(InterveneRequest(model=str(model), prompts=[{"prompt": PROMPT, "target": "paris"}],
                                            max_new_tokens=0, policies=[{"kind": "zero", "site": SITE}]),
                           lab=lab, reporter=NULL_REPORTER)
    assert strong.control_effect is not None and strong.effect_size is not None
    # the random tiny model barely predicts 'paris': its change is judged against p(paris), not in raw nats
    expected = ("no measurable effect",) if abs(strong.effect_fraction) < 0.05 else ("causal", "weak", "destructive",
                                                                                    "not above control")
    assert strong.verdict in expected
    noop = run_intervene(InterveneRequest(model=str(model), prompts=[{"prompt": PROMPT, "target": "paris"}],
                                          max_new_tokens=0, policies=[{"kind": "set_neurons", "neurons": ["1:3"],
                                                                       "value": 0.0, "positions": [0]}]),
                         lab=lab, reporter=NULL_REPORTER)
    assert report_of(lab, noop.run_id).verdict_rules.startswith("destructive")
    assert noop.verdict in ("no measurable effect", "weak", "causal", "not above control")
    assert "Verdict" in strong.summary and "random directions" in strong.summary
    assert noop.control_family == "same-layer neurons"   # set_neurons at position 0: other neurons come first
    assert [c.family for c in noop.controls][:2] == ["same-layer neurons", "other positions"]

