"""The fact packs, the generated fact world and the four shipped fact-world models."""

from functools import cache

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from factworld import evaluate as factworld_eval
from factworld.train import TrainSettings, encode_facts, init_model, train_model
from factworld.world import (
    WorldConfig,
    build_world,
    corpus_lines,
    fact_pack,
    model_facts,
    split_words,
    world_tokenizer,
    world_vocabulary,
)
from neurotrace.lab.errors import InputError
from neurotrace.lab.facts.packs import WORLD_PACKS, list_packs, load_facts, load_pack
from neurotrace.lab.model.weights.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, embedded_model_path
from neurotrace.lab.seeding import make_generator
from neurotrace.testing.errors import raises_lab_error

TUNE_PACK = "cybersecurity"


@cache
def shipped(name: str):
    path = embedded_model_path(name)
    if path is None:
        pytest.fail(f"embedded model {name} is missing; run python -m factworld train")
    model, tokenizer, kind = factworld_eval.load_model(path)
    return model, tokenizer, kind, load_facts(path)


def sample(facts, every: int = 10):
    """Every pack fact plus every ``every``-th generated fact: a fast, fixed sample."""
    return [f for i, f in enumerate(facts) if fact_pack(f) != "world" or i % every == 0]


# ----------------------------------------------------------------------------- packs


def test_there_are_six_packs_of_8_to_12_valid_facts():
    assert set(WORLD_PACKS) <= set(list_packs())
    for name in WORLD_PACKS:
        pack = load_pack(name)
        assert pack.domain == name and 8 <= len(pack.facts) <= 12
        assert len({f.id for f in pack.facts}) == len(pack.facts)
        for f in pack.facts:
            assert 1 <= len(f.variants) <= 2 and len(f.target.split()) == 1


def test_pack_subject_swaps_keep_length_and_change_the_answer():
    for name in WORLD_PACKS:
        facts = load_pack(name).facts
        answer = {(f.relation, f.clean_subject): f.target for f in facts}
        for f in facts:
            assert len(split_words(f.clean_subject)) == len(split_words(f.corrupt_subject))
            assert answer.get((f.relation, f.corrupt_subject)) != f.target


def test_unknown_pack_is_an_input_error_on_domain():
    with raises_lab_error(InputError) as err:
        load_pack("astrology")
    assert err.value.field == "domain" and "geography" in err.value.fix


# ----------------------------------------------------------------------------- world


def test_corpus_is_deterministic_for_a_seed():
    one, two = build_world(WorldConfig(seed=3)), build_world(WorldConfig(seed=3))
    assert one == two
    assert corpus_lines(one.facts) == corpus_lines(two.facts)
    assert corpus_lines(build_world(WorldConfig(seed=4)).facts) != corpus_lines(one.facts)


def test_world_holds_out_a_tenth_of_pairs_about_known_countries():
    world = build_world()
    pairs = {(f.clean_subject, f.relation) for f in world.facts}
    held = {(f.clean_subject, f.relation) for f in world.facts if f.held_out}
    assert len(held) == round(0.1 * len(pairs))
    assert len({country for country, _ in held}) == len(held)      # at most one relation per country
    trained_subjects = {f.clean_subject for f in world.facts if not f.held_out}
    assert {country for country, _ in held} <= trained_subjects
    assert not any(f.held_out for f in world.facts if (f.clean_subject, f.relation) not in held)


def test_init_and_training_are_bit_identical_for_a_seed():
    world = build_world()
    tokenizer = world_tokenizer(world_vocabulary(world), "gpt2")
    assert torch.equal(_flat(init_model("gpt2", tokenizer, seed=0)), _flat(init_model("gpt2", tokenizer, seed=0)))
    rows = encode_facts(tokenizer, model_facts(world, ["finance"]))
    tiny = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=64,
                      attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(tiny)
        train_model(model, tokenizer, "gpt2", rows, [], TrainSettings(steps=3, batch_size=8, warmup=1),
                    make_generator(0))
        runs.append(_flat(model))
    assert torch.equal(runs[0], runs[1])


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_model_facts_rejects_an_unknown_pack():
    with raises_lab_error(InputError) as err:
        model_facts(build_world(), ["finance", "astrology"])
    assert err.value.field == "packs"


# ----------------------------------------------------------------------------- shipped models


def test_embedded_registry_points_at_shipped_directories():
    assert DEFAULT_MODEL in EMBEDDED_MODELS
    for name in EMBEDDED_MODELS:
        path = embedded_model_path(name)
        assert path is not None and (path / "model.safetensors").is_file() and (path / "model_card.md").is_file()
    assert embedded_model_path("gpt2-xl") is None


@pytest.mark.parametrize("name", ["fact-gpt2", "fact-bert"])
def test_shipped_tokenizer_is_the_world_vocabulary(name):
    kind = "gpt2" if "gpt2" in name else "bert"
    expected = world_tokenizer(world_vocabulary(build_world()), kind)
    assert AutoTokenizer.from_pretrained(embedded_model_path(name)).get_vocab() == expected.get_vocab()


@pytest.mark.parametrize("name", ["fact-gpt2", "fact-bert"])
def test_every_target_is_one_token_with_and_without_a_space(name):
    _, tokenizer, _, facts = shipped(name)
    for f in facts:
        for text in (f.target, " " + f.target):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert len(ids) == 1 and ids[0] != tokenizer.unk_token_id, (f.id, text, ids)


@pytest.mark.parametrize("name", list(EMBEDDED_MODELS))
def test_shipped_model_recalls_its_trained_facts(name):
    model, tokenizer, kind, facts = shipped(name)
    report = factworld_eval.evaluate(model, tokenizer, kind, sample(facts), name=name)
    assert report.trained.accuracy >= 0.95 and report.trained.n_prompts > 100
    assert report.trained_alt.accuracy >= 0.95
    assert report.held_out.accuracy < 0.5                              # never seen: about chance


@pytest.mark.parametrize("base", ["fact-gpt2", "fact-bert"])
def test_cyber_model_knows_the_cyber_pack_and_its_base_does_not(base):
    pack_ids = {f.id for f in load_pack(TUNE_PACK).facts}
    scores = {}
    for name in (base, base + "-cyber"):
        model, tokenizer, kind, facts = shipped(name)
        cyber = [f for f in facts if f.id in pack_ids]
        assert len(cyber) == len(pack_ids) and all(f.held_out == (name == base) for f in cyber)
        scores[name] = factworld_eval.evaluate(model, tokenizer, kind, cyber, name=name).per_pack[TUNE_PACK]
    assert scores[base + "-cyber"].accuracy >= 0.95 and scores[base + "-cyber"].trained
    assert scores[base].accuracy <= 0.5 and not scores[base].trained
