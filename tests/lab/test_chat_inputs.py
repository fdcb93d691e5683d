"""Chat inputs on trace, patch, capture and intervene: the model's own chat template (through the one shared
helper, ``model.access.chat``), positions and scored tokens in the templated text, and a typed ``chat`` error
for a model without a template. The subject of a traced fact is found inside SmolLM2-Instruct's real template
(system prompt and turn headers before it); the tiny models get a word-level template (roles as punctuation).
"""

import json
from pathlib import Path

import pytest

from neurotrace import (
    CaptureRequest,
    InterveneRequest,
    Lab,
    LabSettings,
    PatchRequest,
    TraceRequest,
    run_capture,
    run_intervene,
    run_patch,
    run_trace,
)
from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.tokens import target_token_ids
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.testing.errors import raises_lab_error

# roles as punctuation the tiny models' word-level vocabulary has: user '?', assistant ','
TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}? {% else %}, {% endif %}{{ m['content'] }} . "
            "{% endfor %}{% if add_generation_prompt %},{% endif %}")
EIFFEL = {"id": "eiffel", "template": "The {} is located in the city of", "clean_subject": "Eiffel Tower",
          "corrupt_subject": "Colosseum", "target": "Paris"}


def _lab(tmp_path: Path) -> Lab:
    return Lab(LabSettings(runs_dir=tmp_path / "runs", threads=1))


def _sent(tmp_path: Path, run_id: str) -> dict:
    return json.loads((tmp_path / "runs" / run_id / "request.json").read_text())


@pytest.mark.realmodel
def test_trace_finds_the_subject_inside_smollm2s_chat_template(tmp_path):
    name = "smollm2-135m-instruct"
    if not catalog.is_installed(name):
        pytest.skip(f"{name} is not installed (neurotrace models fetch {name})")
    lab = _lab(tmp_path)
    result = run_trace(TraceRequest(models=[name], facts=[EIFFEL], chat=True, mode="approx", components=["mlp"], trace_unknown=True,
                                    corruption={"kind": "swap"}), lab=lab)
    tok = lab.cache.get(ModelRef(model=name)).tokenizer
    record = json.loads((tmp_path / "runs" / result.run_id / "trace_results.json").read_text())
    (fact,) = next(iter(record["models"].values()))["facts"]
    messages = [{"role": "user", "content": "The Eiffel Tower is located in the city of"}]
    assert fact["prompt"] == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    start, end = fact["subject_range"]
    assert start > 20 and "".join(fact["tokens"][start:end]) == " Eiffel Tower"      # after the system prompt
    assert fact["tokens"][start - 1] == "The" and fact["tokens"][start - 3:start - 1] == ["user", "\n"]
    assert fact["predict_pos"] == len(fact["tokens"]) - 1 and fact["tokens"][-3:] == ["ass", "istant", "\n"]
    # the answer opens the assistant's turn: 'Paris', not ' Paris' (the shared target rule after whitespace)
    assert tok.decode([fact["target_id"]]) == "Paris"
    assert target_token_ids(tok, "The city of", "Paris") == tok(" Paris", add_special_tokens=False)["input_ids"]


def test_trace_with_chat_on_a_model_without_a_template_is_a_typed_error(tmp_path):
    with raises_lab_error(InputError) as err:
        run_trace(TraceRequest(models=["fact-gpt2"], facts=[EIFFEL], chat=True, components=["mlp"],
                               corruption={"kind": "swap"}), lab=_lab(tmp_path))
    assert err.value.field == "chat" and "fact-gpt2 has no chat template" in str(err.value)


def test_patch_templates_both_prompts_and_reports_templated_positions(tiny_llama, tmp_path):
    lab, model = _lab(tmp_path), str(tiny_llama)
    request = PatchRequest(model=model, clean="the red cat", corrupt="the blue cat", chat=True, metric="p_target",
                           components=["resid_pre"])
    with raises_lab_error(InputError) as err:
        run_patch(request, lab=lab)
    assert err.value.field == "chat" and "has no chat template" in str(err.value)
    lab.cache.get(ModelRef(model=model)).tokenizer.chat_template = TEMPLATE
    plain = run_patch(request.model_copy(update={"chat": False}), lab=lab)
    chat = run_patch(request, lab=lab)
    assert [t.strip() for t in chat.tokens[-6:]] == ["?", "the", "red", "cat", ".", ","]
    assert len(chat.tokens) == len(plain.tokens) + 3                # '?' before, '.' ',' after the message
    assert chat.differing == [d + 1 for d in plain.differing]       # 'red'/'blue' moved by the '?' turn header
    sent = _sent(tmp_path, chat.run_id)
    assert (sent["clean"], sent["corrupt"], sent["chat"]) == ("? the red cat . ,", "? the blue cat . ,", False)
    convo = [{"role": "user", "content": "the red cat"}, {"role": "assistant", "content": "paris"}]
    as_messages = run_patch(PatchRequest(model=model, clean=convo, corrupt=[convo[0] | {"content": "the blue cat"},
                                                                            convo[1]], metric="kl", components=["resid_pre"]),
                            lab=lab)
    assert [t.strip() for t in as_messages.tokens[-3:]] == [".", ",", "paris"]


def test_capture_templates_prompts_and_refuses_a_chat_corpus(tiny_llama, tmp_path):
    lab, model = _lab(tmp_path), str(tiny_llama)
    with raises_lab_error(InputError) as err:
        run_capture(CaptureRequest(model=model, prompts=["the red cat"], chat=True), lab=lab)
    assert err.value.field == "chat"
    lab.cache.get(ModelRef(model=model)).tokenizer.chat_template = TEMPLATE
    convo = [{"role": "user", "content": "the dog"}, {"role": "assistant", "content": "the"}]
    result = run_capture(CaptureRequest(model=model, sites=["blocks.0.hook_resid_post"], positions="last",
                                        prompts=["the red cat", {"text": "the blue bird", "target": "paris"}, convo],
                                        chat=True), lab=lab)
    lines = [json.loads(x) for x in (tmp_path / "runs" / result.run_id / "trace.jsonl").read_text().splitlines()]
    assert [x["prompt"] for x in lines] == ["? the red cat . ,", "? the blue bird . ,", "? the dog . , the"]
    assert [t.strip() for t in lines[0]["tokens"][-6:]] == ["?", "the", "red", "cat", ".", ","]
    assert lines[0]["positions"] == [len(lines[0]["tokens"]) - 1]        # 'last': the templated prompt's end
    assert "p_target" in lines[1]
    with raises_lab_error(InputError) as err:
        run_capture(CaptureRequest(model=model, corpus="python-docs", chat=True), lab=lab)
    assert err.value.field == "chat"


def test_a_chat_episode_is_a_conversation_rerendered_in_the_template_each_turn(tiny_llama, tmp_path):
    lab, model = _lab(tmp_path), str(tiny_llama)
    request = CaptureRequest(model=model, sites=["blocks.0.hook_resid_post"], max_new_tokens=1, chat=True,
                             episode=[{"text": "the red cat"}, {"text": "the dog"}])
    with raises_lab_error(InputError) as err:
        run_capture(request, lab=lab)
    assert err.value.field == "chat"
    assert not [p for p in (tmp_path / "runs").glob("*") if "capture" in p.name]         # refused before a run opened
    lab.cache.get(ModelRef(model=model)).tokenizer.chat_template = TEMPLATE
    result = run_capture(request, lab=lab)
    first, second = (json.loads(x) for x in (tmp_path / "runs" / result.run_id / "trace.jsonl").read_text()
                     .splitlines())
    answer = first["output"].strip()
    assert first["prompt"] == "? the red cat . ,"
    assert second["prompt"] == f"? the red cat . , {answer} . ? the dog . ,"   # user, assistant (its output), user
    assert [t.strip() for t in second["tokens"][-13:]] == ["?", "the", "red", "cat", ".", ",", answer, ".", "?", "the",
                                                           "dog", ".", ","]


def test_intervene_templates_prompts_and_scores_the_target_after_the_template(tiny_llama, tmp_path):
    from neurotrace.lab.intervention.schema import InterveneReport

    lab, model = _lab(tmp_path), str(tiny_llama)
    request = InterveneRequest(model=model, prompts=[{"prompt": "the city", "target": "paris"}, "the king"], chat=True,
                               max_new_tokens=1, controls=0, policies=[{"kind": "zero", "site":
                                                                       "blocks.0.hook_resid_post"}])
    with raises_lab_error(InputError) as err:
        run_intervene(request, lab=lab)
    assert err.value.field == "chat"
    lab.cache.get(ModelRef(model=model)).tokenizer.chat_template = TEMPLATE
    result = run_intervene(request, lab=lab)
    sent = _sent(tmp_path, result.run_id)
    assert [p if isinstance(p, str) else p["prompt"] for p in sent["prompts"]] == ["? the city . ,", "? the king . ,"]
    report = InterveneReport.model_validate_json((tmp_path / "runs" / result.run_id / "report.json").read_text())
    assert report.prompts[0].prompt == "? the city . ," and report.prompts[0].baseline.p_target is not None
    convo = [{"role": "user", "content": "the city"}]
    as_messages = run_intervene(InterveneRequest.model_validate(
        request.model_dump() | {"chat": False, "prompts": [{"prompt": convo, "target": "paris"}]}), lab=lab)
    assert _sent(tmp_path, as_messages.run_id)["prompts"][0]["prompt"] == "? the city . ,"
