"""steer: the planted direction is causal and monotone; controls catch unrelated and confounded directions;
SAE and probe directions are read from their runs; the steered p(target) equals TransformerLens hooks."""

import pytest
import torch

from neurotrace.lab.errors import Cancelled, InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.access.tokens import target_id
from neurotrace.lab.model.runtime.stepwise import continue_greedy
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.probe import ProbeRequest, run_probe
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.steering import SteerRequest, run_steer
from neurotrace.lab.steering.figures import FIGURES, RESULTS_FILE
from neurotrace.lab.steering.measure import steer_hook, steered_texts, target_probs
from neurotrace.lab.steering.schema import SteerResults
from neurotrace.lab.steering.verdict import verdict
from neurotrace.testing.planted_neurons import PROBE_DIM, build_planted_neurons
from neurotrace.testing.records import assert_redraws, read_back
from neurotrace.testing.tiny import tiny_tokenizer

PAIRS = [("the big fish", "the big cat"), ("one fish", "one cat"), ("a red fish", "a red cat"), ("its fish", "its cat")]
PROMPTS = ["big red the", "the old a", "two of", "car is"]          # end in uncertain function words
CONTROLS = ["the big dog", "a red car", "one old house", "the sun"]  # end in confident tokens
ALPHAS = [0.1, 0.25, 0.5, 0.7]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted_neurons(tmp_path_factory.mktemp("planted-steer") / "m")


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def _steer(lab, planted, **kw):
    fields = {"model": str(planted.path), "direction_from": {"pairs": PAIRS, "layer": 1}, "prompts": PROMPTS,
              "targets": [planted.steer_target], "control_prompts": CONTROLS, "alphas": ALPHAS,
              "max_new_tokens": 4} | kw
    return run_steer(SteerRequest(**fields), lab=lab)


def test_planted_direction_raises_p_target_monotonically_and_is_causal(lab, planted):
    result = _steer(lab, planted)
    assert result.verdict == "causal" and result.monotonic
    changes = [e.direction for e in result.effects]
    assert changes == sorted(changes) and changes[0] == 0.0 and changes[-1] > 0.9
    top = result.effects[-1]
    assert top.random < changes[-1] / 3 and top.shuffled < 0.01 and top.control < 0.01
    assert result.ref_norm == pytest.approx(1.0, abs=1e-4) and result.p_base < 0.05
    texts = lab.store.artifact_path(result.run_id, "tables/generations.csv").read_text(encoding="utf-8")
    assert "tree house" in texts
    report = lab.store.artifact_path(result.run_id, "report.md").read_text(encoding="utf-8")
    assert "Verdict: causal" in report and "E > 3 R" in report
    assert any(u.endswith("figures/effect_vs_alpha.png") for u in result.figures)


def test_a_direction_unrelated_to_the_target_has_no_effect(lab, planted):
    pairs = [("the big dog", "the big car"), ("one dog", "one car"), ("a dog", "a car")]
    result = _steer(lab, planted, direction_from={"pairs": pairs, "layer": 1}, max_new_tokens=0)
    assert result.verdict == "no effect" and abs(result.effects[-1].direction) < 0.05


def test_control_prompts_that_move_as_much_make_the_verdict_confounded(lab, planted):
    result = _steer(lab, planted, control_prompts=["the the", "a of", "in is"], max_new_tokens=0)
    assert result.verdict == "confounded" and result.effects[-1].control > result.effects[-1].direction / 2


def test_verdict_thresholds():
    assert verdict(0.5, 0.1, 0.1, 0.1, 0.05) == "causal"
    assert verdict(0.5, 0.2, None, None, 0.05) == "weak"
    assert verdict(0.5, 0.1, 0.3, None, 0.05) == "confounded"
    assert verdict(0.5, 0.1, None, 0.3, 0.05) == "confounded"
    assert verdict(0.04, 0.0, None, None, 0.05) == "no effect"
    assert verdict(0.5, 0.6, None, None, 0.05) == "no effect"


def test_probe_direction_is_read_from_its_run_and_a_readable_but_unused_direction_has_no_effect(lab, planted):
    prompts = [f"{w} {a} {b}" for w in ("fish", "cat") for a, b in [("big", "red"), ("old", "dog"), ("car", "tree")]]
    probe = run_probe(ProbeRequest(model=str(planted.path), prompts=prompts, labels=["f"] * 3 + ["c"] * 3,
                                   positive="f", k_folds=3, layers=[1]), lab=lab)
    result = _steer(lab, planted, direction_from={"probe_run_id": probe.run_id, "layer": 1}, max_new_tokens=0)
    assert result.verdict == "no effect" and result.site == "blocks.1.hook_resid_pre"
    assert probe.run_id in lab.store.manifest(result.run_id).inputs
    arrays = lab.store.read_tensors(result.run_id, "arrays/directions.safetensors")
    assert int(arrays["direction"].abs().argmax()) == PROBE_DIM


def test_sae_feature_decoder_row_is_steered_at_the_sae_site(lab, planted):
    w_dec = torch.zeros(3, 88)
    w_dec[2, tiny_tokenizer("causal").convert_tokens_to_ids("fish")] = 1.0
    with lab.store.open_run("fit_sae", {"fake": True}) as run:
        run.write_json("sae_config.json", {"architecture": "topk", "d_in": 88, "d_sae": 3, "k": 1,
                                           "site": "blocks.1.hook_resid_pre"})
        run.write_tensors("sae.safetensors", {"W_dec": w_dec, "W_enc": w_dec.T.contiguous(), "b_enc": torch.zeros(3),
                                              "b_dec": torch.zeros(88)})
    result = _steer(lab, planted, direction_from={"fit_sae_run_id": run.run_id, "feature": 2}, max_new_tokens=0,
                    control_prompts=[])
    assert result.verdict == "causal" and result.effects[-1].shuffled is None
    before = {p.name for p in lab.store.root.iterdir()}
    with pytest.raises(InputError) as err:
        _steer(lab, planted, direction_from={"fit_sae_run_id": run.run_id, "feature": 3}, max_new_tokens=0)
    assert err.value.field == "direction_from.feature"
    assert {p.name for p in lab.store.root.iterdir()} == before   # refused before a run opened (#23 item 3)


def test_steered_probabilities_equal_transformerlens_run_with_hooks(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2), backend="bridge"))
    ids = [lm.tokenizer("the cat is").input_ids, lm.tokenizer("a big dog").input_ids]
    vec = torch.randn(2, lm.d_model, generator=torch.Generator().manual_seed(0))
    tgt = [target_id(lm.tokenizer, "big")]
    for positions in ("all", "last"):
        ours = target_probs(lm, ids, ["blocks.1.hook_resid_pre"], vec, tgt, positions, NULL_REPORTER)
        for k in range(2):
            for i, seq in enumerate(ids):
                start = 0 if positions == "all" else len(seq) - 1

                def add(act, hook, k=k, start=start):
                    act = act.clone()
                    act[:, start:] += vec[k]
                    return act

                with torch.no_grad():
                    logits = lm.bridge.run_with_hooks(torch.tensor([seq]),
                                                      fwd_hooks=[("blocks.1.hook_resid_pre", add)])
                p = torch.softmax(logits[0, -1].double(), -1)[tgt[0]]
                assert float(ours[k, i]) == pytest.approx(float(p), abs=1e-6)


@pytest.mark.parametrize(("fields", "field"), [
    ({"alphas": [0.0]}, "alphas"),
    ({"layers": [5]}, "layers"),
    ({"direction_from": {"pairs": PAIRS, "layer": 9}}, "direction_from.layer"),
    ({"direction_from": {"pairs": [("the fish", "the fish"), ("a", "a")], "layer": 1}}, "direction_from"),
    ({"targets": [" "]}, "targets"),
])
def test_bad_requests_raise_input_errors_naming_the_field(lab, planted, fields, field):
    with pytest.raises(InputError) as err:
        _steer(lab, planted, max_new_tokens=0, **fields)
    assert err.value.field == field


@pytest.mark.parametrize("positions", ["all", "last"])
def test_batched_steered_text_equals_steering_a_full_recompute_each_step(tiny_gpt2, positions):
    lm = load(ModelRef(model=str(tiny_gpt2)))
    ids = lm.tokenizer("the cat is big").input_ids
    vectors = 3 * torch.randn(2, lm.d_model, generator=torch.Generator().manual_seed(1))
    ours = steered_texts(lm, ids, ["blocks.1.hook_resid_pre"], vectors, positions, 6)
    for k in range(2):
        start = 0 if positions == "all" else len(ids) - 1
        hooks = {"blocks.1.hook_resid_pre": steer_hook(vectors[k:k + 1], start)}
        cont = continue_greedy(lm, ids, 6, context_for=lambda _k, hooks=hooks: hooked(lm.model, lm.adapter, hooks))
        tokens = [t for t in cont.tokens if t != lm.tokenizer.eos_token_id]
        assert ours[k] == lm.tokenizer.decode(tokens, skip_special_tokens=True)


def test_steering_repeats_exactly_for_a_seed_and_cancelling_marks_the_run_cancelled(lab, planted):
    a, b = _steer(lab, planted, max_new_tokens=0, seed=5), _steer(lab, planted, max_new_tokens=0, seed=5)
    assert [e.model_dump() for e in a.effects] == [e.model_dump() for e in b.effects]
    reporter = Reporter()
    reporter.cancel()
    with pytest.raises(Cancelled):
        run_steer(SteerRequest(model=str(planted.path), direction_from={"pairs": PAIRS, "layer": 1}, prompts=PROMPTS,
                               targets=["tree"]), lab=lab, reporter=reporter)
    assert lab.store.list_runs("steer")[0].status == "cancelled"


def test_the_saved_results_round_trip_through_their_record_and_redraw_the_runs_figures(lab, planted):
    result = _steer(lab, planted, max_new_tokens=0)
    rec = read_back(lab, result.run_id, RESULTS_FILE, SteerResults.model_validate)
    assert (rec.verdict, rec.ref_norm, rec.p_base) == (result.verdict, result.ref_norm, result.p_base)
    assert rec.alphas == [0.0, *ALPHAS] and rec.curves["direction"] == [e.direction for e in result.effects]
    assert set(rec.curves) == {"direction", "random_0", "random_1", "random_2", "shuffled", "control_prompts"}
    assert_redraws(lab, result.run_id, FIGURES, rec)
    direction = FIGURES["effect_vs_alpha"](rec).axes[0].get_lines()[-2]   # drawn last, before the zero line
    assert list(direction.get_ydata()) == rec.curves["direction"]


def test_a_direction_that_shifts_the_generations_reads_causal_by_the_concept_score(lab, planted):
    # the fish-cat direction makes the model say 'tree house': p('house') as the next token does not rise (the
    # next token becomes 'tree'), so the one-token metric sees nothing, but 'house' fills the generations
    result = _steer(lab, planted, targets=["house"], control_prompts=[], max_new_tokens=4)
    top = next(e for e in result.effects if e.alpha == result.alpha_verdict)
    assert abs(top.direction) < 0.05                      # p(targets) alone would say "no effect"
    assert (result.verdict, result.verdict_metric) == ("causal", "concept score")
    assert top.concept > 0.1 and top.concept > 2 * (top.concept_random or 0.0)
    assert "concept score changes +" in result.summary and "by concept score" in result.summary


def test_alphas_that_break_the_model_read_destructive_and_the_hint_says_smaller_alphas(lab, planted):
    result = _steer(lab, planted, alphas=[30.0, 60.0], max_new_tokens=4)
    assert result.verdict == "destructive" and result.alpha_verdict is None
    assert all(e.destructive for e in result.effects if e.alpha)
    assert "smaller alphas" in result.next and "Try smaller alphas" in result.summary
    rec = read_back(lab, result.run_id, RESULTS_FILE, SteerResults.model_validate)
    assert rec.damage[-1].destructive and rec.damage[0].kl == pytest.approx(0.0, abs=1e-6)


def test_the_verdict_is_read_at_the_largest_alpha_that_is_not_destructive(lab, planted):
    result = _steer(lab, planted, alphas=[0.5, 60.0], max_new_tokens=4)
    assert [e.destructive for e in result.effects] == [False, False, True]
    assert result.alpha_verdict == 0.5 and result.verdict == "causal"
    assert "Alphas 60 are destructive" in result.summary
