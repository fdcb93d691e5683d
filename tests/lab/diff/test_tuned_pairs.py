"""Tuned pairs on tiny models: base+adapter references, one load serving both adapter states, the manifest's
adapter sha256, typed refusals (base mismatch, pickled weights), and the shared chat-input rule."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from neurotrace.lab.diff import DiffRequest, run_diff
from neurotrace.lab.errors import InputError, NotFound
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.access.chat import Message, templated
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.model.weights.lora import AdapterMismatch, adapter_state, shipped_adapters
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.lora import write_adapter

PROMPT = "the capital of france is"


@pytest.fixture(scope="module")
def adapter(tiny_llama: Path, tmp_path_factory) -> Path:
    return write_adapter(tiny_llama, tmp_path_factory.mktemp("lora") / "a", base=str(tiny_llama), seed=1)


def _lab(tmp_path: Path) -> Lab:
    return Lab(LabSettings(runs_dir=tmp_path / "runs", threads=1))


def _logits(lm, text: str) -> torch.Tensor:
    ids = torch.tensor([lm.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return lm.model(input_ids=ids).logits[0, -1]


def test_one_load_serves_both_adapter_states(tiny_llama, adapter, tmp_path):
    lab = _lab(tmp_path)
    plain = lab.cache.get(ModelRef(model=str(tiny_llama)))
    tuned = lab.cache.get(ModelRef.model_validate({"model": {"base": str(tiny_llama), "adapter": str(adapter)}}))
    assert tuned.ref.model == f"{tiny_llama}+{adapter}"
    with adapter_state(tuned.model, False):
        off = _logits(tuned, PROMPT)
    on = _logits(tuned, PROMPT)
    assert torch.allclose(off, _logits(plain, PROMPT), atol=1e-5)      # adapter off == the base itself
    assert (on - off).abs().max() > 1e-2                               # on: a real change
    assert torch.allclose(_logits(tuned, PROMPT), on)                  # on again after the block
    sha = hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert tuned.provenance["adapter"]["sha256"] == sha


def test_diff_in_adapter_mode_uses_one_load_and_records_the_adapter(tiny_llama, adapter, tmp_path):
    lab = _lab(tmp_path)
    model = f"{tiny_llama}+{adapter}"
    result = run_diff(DiffRequest(model=model, prompts=[PROMPT, "the city of rome is in italy"], max_new_tokens=2),
                      lab=lab)
    assert result.mode == "adapter" and list(lab.cache.load_count.values()) == [1]
    manifest = json.loads((tmp_path / "runs" / result.run_id / "manifest.json").read_text())
    assert manifest["model_sources"][model]["adapter"]["sha256"] == hashlib.sha256(
        (adapter / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert all(x.kl_max > 0 for x in result.top_inputs) and len(result.figures) == 4
    assert str(Path.home()) not in result.summary


def test_base_vs_itself_differs_nowhere(tiny_llama, adapter, tmp_path):
    """An adapter whose B matrices are zero changes nothing: every input sits at zero KL, below its floor."""
    from safetensors.torch import load_file, save_file

    zero = tmp_path / "zero"
    zero.mkdir()
    tensors = {k: (torch.zeros_like(v) if ".lora_B." in k else v) for k, v in
               load_file(str(adapter / "adapter_model.safetensors")).items()}
    save_file(tensors, str(zero / "adapter_model.safetensors"))
    (zero / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    result = run_diff(DiffRequest(model=f"{tiny_llama}+{zero}", prompts=[PROMPT], max_new_tokens=0),
                      lab=_lab(tmp_path))
    assert result.n_inputs_above_floor == 0 and result.top_inputs[0].kl_max < 1e-6
    assert result.layers_above_floor == [] and result.top_heads == []


def test_adapter_for_another_base_is_refused_naming_both(tiny_llama, tiny_neox, adapter, tmp_path):
    lab = _lab(tmp_path)
    with raises_lab_error(AdapterMismatch) as err:
        lab.cache.get(ModelRef(model=f"{tiny_neox}+{adapter}"))
    assert err.value.field == "model" and "adapter 'a'" in str(err.value) and str(tiny_neox) in str(err.value)
    named = tmp_path / "named"
    named.mkdir()
    (named / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
    (named / "adapter_config.json").write_text(json.dumps({"base": "smollm2-135m-instruct", "rank": 2}))
    with raises_lab_error(AdapterMismatch, match="trained on 'smollm2-135m-instruct', not"):
        lab.cache.get(ModelRef(model=f"{tiny_llama}+{named}"))


def test_pickled_or_missing_adapters_are_refused(tiny_llama, tmp_path):
    lab = _lab(tmp_path)
    pickled = tmp_path / "p"
    pickled.mkdir()
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04not really")
    (pickled / "adapter_config.json").write_text("{}")
    with raises_lab_error(InputError, match="only pickled weights"):
        lab.cache.get(ModelRef(model=f"{tiny_llama}+{pickled}"))
    with raises_lab_error(InputError, match="must be safetensors"):
        lab.cache.get(ModelRef(model=f"{tiny_llama}+{pickled / 'adapter_model.bin'}"))
    with raises_lab_error(NotFound, match="no adapter named"):
        lab.cache.get(ModelRef(model=f"{tiny_llama}+no-such-adapter"))


def test_diff_requests_are_checked(tiny_llama, tmp_path):
    with raises_lab_error(InputError, match="exactly one"):
        DiffRequest(model="fact-gpt2")
    with raises_lab_error(InputError) as err:
        run_diff(DiffRequest(model="fact-gpt2", prompts=[PROMPT]), lab=_lab(tmp_path))
    assert err.value.field == "base" and "names no adapter" in str(err.value)
    with raises_lab_error(InputError) as err:
        run_diff(DiffRequest(model="fact-gpt2", base="fact-bert", prompts=[PROMPT], max_new_tokens=0),
                 lab=_lab(tmp_path))
    assert err.value.field in ("base", "model")


def test_diff_between_a_base_and_its_tuned_copy_finds_the_tuned_domain(tmp_path):
    """fact-gpt2-cyber learnt the cybersecurity pack: its prompts change most; a geography prompt hardly."""
    cyber = ["The default port of SSH is", "The malware Stuxnet was first seen in"]
    other = ["The capital of France is", "The river Nile flows through"]
    result = run_diff(DiffRequest(model="fact-gpt2-cyber", base="fact-gpt2", prompts=cyber + other,
                                  max_new_tokens=0, attention=False), lab=_lab(tmp_path))
    by_prompt = {x.prompt: x.kl_last for x in result.top_inputs}
    assert min(by_prompt[p] for p in cyber) > max(by_prompt.get(p, 0.0) for p in other)


def test_chat_inputs_are_templated_or_refused(tmp_path):
    from neurotrace.lab.model.access.wordlevel import build_tokenizer

    tok = build_tokenizer(["hi", "there"], "causal")
    with raises_lab_error(InputError) as err:
        templated(tok, "hi", chat=True, model="fact-gpt2")
    assert err.value.field == "chat" and "fact-gpt2 has no chat template" in str(err.value)
    assert templated(tok, "hi there", chat=False, model="fact-gpt2") == "hi there"
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}" \
                        "{% if add_generation_prompt %}<assistant>{% endif %}"
    assert templated(tok, "hi", chat=True, model="x") == "<user>hi<assistant>"
    convo = [Message(role="user", content="hi"), Message(role="assistant", content="there")]
    assert templated(tok, convo, chat=False, model="x") == "<user>hi<assistant>there"
    with raises_lab_error(InputError) as err:
        run_diff(DiffRequest(model="fact-gpt2-cyber", base="fact-gpt2", prompts=["hi"], chat=True), lab=_lab(tmp_path))
    assert err.value.field == "chat"


def test_shipped_adapters_are_safetensors_with_cards():
    shipped = shipped_adapters()
    assert {"eiffel-rome-lora", "cyber-lora", "eiffel-rome-chat-lora"} <= set(shipped)
    for name, folder in shipped.items():
        card = json.loads((folder / "card.json").read_text())
        assert card["name"] == name and card["base"] in ("gemma-3-270m", "smollm2-135m-instruct")
        assert (folder / "adapter_model.safetensors").stat().st_size < 4 * 2**20
        assert card["sha256"] == hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()
        assert {"train", "held_out", "controls"} <= set(card["accuracy"]["tuned"]) and card["minutes"] > 0


# roles as punctuation the tiny models' word-level vocabulary has: user '?', assistant ','
TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}? {% else %}, {% endif %}{{ m['content'] }} . "
            "{% endfor %}{% if add_generation_prompt %},{% endif %}")


def test_prompt_tools_take_chat_inputs_and_refuse_a_model_without_a_template(tiny_llama, tmp_path):
    from neurotrace import (
        AttentionRequest,
        AttributeRequest,
        LogitLensRequest,
        run_attention,
        run_attribute,
        run_logit_lens,
    )

    lab = _lab(tmp_path)
    model = str(tiny_llama)
    with raises_lab_error(InputError) as err:
        run_logit_lens(LogitLensRequest(model=model, prompt="the city", chat=True), lab=lab)
    assert err.value.field == "chat" and "has no chat template" in str(err.value)
    lab.cache.get(ModelRef(model=model)).tokenizer.chat_template = TEMPLATE
    lens = run_logit_lens(LogitLensRequest(model=model, prompt="the city", chat=True), lab=lab)
    assert [t.strip() for t in lens.tokens[-5:]] == ["?", "the", "city", ".", ","]
    assert lens.scored_position == len(lens.tokens) - 1
    convo = [{"role": "user", "content": "the city"}, {"role": "assistant", "content": "paris"}]
    att = run_attention(AttentionRequest(model=model, prompt=convo), lab=lab)
    assert [t.strip() for t in att.tokens[-6:]] == ["?", "the", "city", ".", ",", "paris"]
    attr = run_attribute(AttributeRequest(model=model, prompt="the city", chat=True, target="paris"), lab=lab)
    assert json.loads((tmp_path / "runs" / attr.run_id / "request.json").read_text())["prompt"] == "? the city . ,"


def test_probe_find_neurons_and_steer_take_chat_prompts(tiny_llama, tmp_path):
    from neurotrace import FindNeuronsRequest, ProbeRequest, run_find_neurons, run_probe

    lab = _lab(tmp_path)
    model = str(tiny_llama)
    prompts = ["the red cat", "the blue dog", "the red fish", "the blue bird"]
    with raises_lab_error(InputError) as err:
        run_probe(ProbeRequest(model=model, prompts=prompts, labels=["r", "b", "r", "b"], chat=True), lab=lab)
    assert err.value.field == "chat"
    lab.cache.get(ModelRef(model=model)).tokenizer.chat_template = TEMPLATE
    probe = run_probe(ProbeRequest(model=model, prompts=prompts, labels=["r", "b", "r", "b"], chat=True, k_folds=2),
                      lab=lab)
    sent = json.loads((tmp_path / "runs" / probe.run_id / "request.json").read_text())["prompts"]
    assert sent[0] == "? the red cat . ,"
    neurons = run_find_neurons(FindNeuronsRequest(model=model, prompts=prompts[:2], control_prompts=prompts[2:],
                                                  chat=True), lab=lab)
    assert json.loads((tmp_path / "runs" / neurons.run_id / "request.json").read_text())["control_prompts"][1] \
        == "? the blue bird . ,"
