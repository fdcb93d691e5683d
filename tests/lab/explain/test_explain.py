"""explain in the lab: evidence, the blind quiz, scoring against a kept key, labels, and ground truth.

A dictionary with a planted number feature (neurotrace.testing.explain_world) is named and scored by a rule-based
judge: its name predicts held-out activations; the same name does not predict a random feature's; a scrambled
key is at chance; the key is never served.
"""

import pytest

from neurotrace.lab.capture import CaptureRequest, run_capture
from neurotrace.lab.errors import InputError
from neurotrace.lab.explain import AnswerSheet, ExplainRequest, read_labels, run_explain
from neurotrace.lab.explain.prompts import (
    detection_prompt,
    explainer_prompt,
    fuzzing_prompt,
    parse_explanation,
    parse_ids,
)
from neurotrace.lab.explain.schema import KEY_FILE, ExplainResults
from neurotrace.lab.explain.scoring import balanced_accuracy, method_score, wilson
from neurotrace.lab.features import FeaturesRequest, run_features
from neurotrace.lab.intervention import InterveneRequest, run_intervene
from neurotrace.lab.steering import SteerRequest, run_steer
from neurotrace.testing.explain_world import MODEL, SITE, build_world, rule_reply


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("explain"))


def _request(corpus: str, folder: str, feature: int, **kw) -> ExplainRequest:
    return ExplainRequest(model=MODEL, feature=feature, dictionary=folder, corpus=corpus, context_size=32,
                          max_tokens=4096, **kw)


def _answers(quiz, explanation: str) -> AnswerSheet:
    return AnswerSheet(detection=parse_ids(rule_reply(detection_prompt(explanation, quiz.detection))),
                       fuzzing=parse_ids(rule_reply(fuzzing_prompt(explanation, quiz.fuzzing))))


def test_scoring_primitives():
    assert balanced_accuracy({1, 2}, {1, 2}, [1, 2, 3, 4]) == 1.0
    assert balanced_accuracy(set(), {1, 2}, [1, 2, 3, 4]) == 0.5
    assert balanced_accuracy({3, 4}, {1, 2}, [1, 2, 3, 4]) == 0.0
    lo, hi = wilson(0.5, 20)
    assert 0.29 < lo < 0.31 and 0.69 < hi < 0.71
    perfect = method_score({1, 2, 3}, [1, 2, 3], [1, 2, 3, 4, 5, 6], seed=0)
    assert perfect.balanced_accuracy == 1.0 and perfect.p_value < 0.1 and abs(perfect.null_mean - 0.5) < 0.05


def test_planted_feature_is_named_and_predicts_held_out_text(world):
    lab, corpus, folder = world
    first = run_explain(_request(corpus, folder, 0), lab=lab)
    assert first.scores is None and first.quiz is not None
    assert all("<<" in ex.text for ex in first.top)
    # the key stays with the server: beside the run, never listed as an artifact
    assert (lab.store.run_dir(first.run_id) / KEY_FILE).is_file()
    assert not any(KEY_FILE in uri for uri in first.artifacts)
    evidence = ExplainResults.model_validate(lab.store.read_json(first.run_id, "explain_results.json")).evidence
    explanation = parse_explanation(rule_reply(explainer_prompt(evidence)))
    assert "numbers" in explanation
    second = run_explain(ExplainRequest(quiz_run_id=first.run_id, explanation=explanation,
                                        answers=_answers(first.quiz, explanation)), lab=lab)
    s = second.scores
    assert s.detection.balanced_accuracy >= 0.9 and s.detection.ci95[0] > 0.5, s
    assert s.fuzzing.balanced_accuracy >= 0.9, s
    assert s.verdict == "predictive"
    assert abs(s.detection.null_mean - 0.5) < 0.05 and s.detection.null_p95 < s.detection.balanced_accuracy
    labels = read_labels(lab, next(iter(p.stem for p in (lab.store.root / "labels").iterdir())))
    assert labels["0"].explanation == explanation and labels["0"].verdict == "predictive"
    # the name shows where the feature does: its page in `features` (and Neuronpedia's explanations field)
    capture = run_capture(CaptureRequest(model=MODEL, sites=[SITE], corpus=corpus, context_size=32,
                                         max_tokens=2048), lab=lab)
    pages = run_features(FeaturesRequest(dictionary=folder, model=MODEL, capture_run_id=capture.run_id,
                                         features=[0, 1]), lab=lab)
    assert pages.names == {"0": f"{explanation!r} (predictive)"}
    assert f"named {explanation!r} (predictive)" in pages.summary
    full = lab.store.read_json(pages.run_id, "features/0.json")
    assert full["explanations"][0]["description"] == explanation
    # ... and in intervene's verdict sentence: which edited features are named, and how well the names predict
    edit = run_intervene(InterveneRequest(model=MODEL, dictionary=folder, prompts=[
        {"prompt": "The default port of SSH is", "target": "22"}],
        policies=[{"kind": "ablate_features", "features": [0, 1]}], max_new_tokens=0, controls=2), lab=lab)
    assert f"feature 0 is named {explanation!r} (predictive" in edit.summary
    assert "feature 1 is unnamed (explain can name it" in edit.summary
    steered = run_steer(SteerRequest(model=MODEL, direction_from={"dictionary": folder, "feature": 0},
                                     prompts=["The default port of SSH is"], targets=["22"], alphas=[0.1],
                                     n_random=1, max_new_tokens=0), lab=lab)
    assert f"named {explanation!r}: predictive on a blind test" in steered.summary
    with pytest.raises(InputError) as err:   # a quiz is scored once
        run_explain(ExplainRequest(quiz_run_id=first.run_id, explanation=explanation,
                                   answers=_answers(first.quiz, explanation)), lab=lab)
    assert err.value.field == "quiz_run_id"


def test_the_same_name_does_not_predict_a_random_feature(world):
    lab, corpus, folder = world
    first = run_explain(_request(corpus, folder, 1), lab=lab)
    explanation = "fires on numbers (tokens made of digits)."
    second = run_explain(ExplainRequest(quiz_run_id=first.run_id, explanation=explanation,
                                        answers=_answers(first.quiz, explanation)), lab=lab)
    assert second.scores.verdict != "predictive", second.summary
    assert second.scores.detection.balanced_accuracy < 0.75


def test_bad_answers_and_explanations_are_typed_errors(world):
    lab, corpus, folder = world
    first = run_explain(_request(corpus, folder, 0, seed=3), lab=lab)
    with pytest.raises(InputError) as err:
        run_explain(ExplainRequest(quiz_run_id=first.run_id, explanation="numbers",
                                   answers=AnswerSheet(detection=[999])), lab=lab)
    assert err.value.field == "answers.detection" and "999" in str(err.value)
    with pytest.raises(ValueError, match="cap of 300"):
        ExplainRequest(model=MODEL, neuron="0:1", explanation="x" * 301)
    with pytest.raises(ValueError, match="exactly one of neuron"):
        ExplainRequest(model=MODEL)
    with pytest.raises(InputError) as err:
        run_explain(_request(corpus, folder, 7), lab=lab)
    assert err.value.field == "feature" and "2 features" in str(err.value)


def test_a_neuron_and_a_head_get_evidence(world):
    lab, corpus, _ = world
    out = run_explain(ExplainRequest(model=MODEL, neuron="1:5", corpus=corpus, context_size=32, max_tokens=4096),
                      lab=lab)
    assert out.unit == "neuron 1:5" and len(out.promoted) == 10 and out.quiz.detection
    assert "quiz_run_id=" in out.next
    head = run_explain(ExplainRequest(model=MODEL, head="2:1", corpus=corpus, context_size=32, max_tokens=4096,
                                      fire_fraction=0.7),
                       lab=lab)
    assert head.unit == "head 2:1" and head.quiz.detection and head.promoted == []
    with pytest.raises(InputError) as err:
        run_explain(ExplainRequest(model=MODEL, head="2:99", corpus=corpus), lab=lab)
    assert err.value.field == "head" and "heads" in str(err.value)
