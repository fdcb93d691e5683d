"""The fact world: a seeded synthetic world, its training corpus and its word-level tokenizers.

neurotrace ships its own small models so every tool runs offline. To know *exactly* what such a
model was taught, we generate the training data ourselves:

* **Generated relations.** ``n_countries`` fictional countries, each with a capital, a language, a
  currency and a continent (:data:`WORLD_RELATIONS`). Languages, currencies and continents are shared
  by several countries; capitals are unique. Every relation has 3-4 phrasings, so a model must learn
  the fact rather than one string. Subjects of a relation are all countries, so swapping the subject
  for another country is a meaningful corruption.
* **Held-out facts.** About ``held_out_fraction`` of the (country, relation) pairs never appear in
  training, in any phrasing. At most one relation per country is held out, so every held-out fact is
  about a *known* subject: the model has seen the country, just not this fact. Held-out accuracy
  measures guessing (about chance), trained accuracy measures recall.
* **Domain packs.** The hand-written packs of :mod:`neurotrace.lab.facts.packs` are part of the world;
  which packs a model is trained on is decided per model (the base models skip cybersecurity so a
  tuned model can add it).

One word-level vocabulary covers the whole world - every pack included - so a base model and its
tuned descendant share token ids. Each word is one token, with or without a leading space, hence
every target is a single token: ``tok(" Paris", add_special_tokens=False)`` gives one id.

Everything is a pure function of :class:`WorldConfig` (``seed`` included); the same seed gives the
same world, corpus and vocabulary. Training and evaluation live in :mod:`factworld_train` and
:mod:`factworld_eval`; this module is also the CLI::

    python -m factworld train --out neurotrace/data/models
    python -m factworld evaluate neurotrace/data/models/fact-gpt2
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedTokenizerFast

from neurotrace.lab.errors import InputError
from neurotrace.lab.facts.fact import Fact, PromptVariant
from neurotrace.lab.facts.packs import WORLD_PACKS, FactPack, load_pack
from neurotrace.lab.model.access.wordlevel import build_tokenizer, split_words
from neurotrace.lab.seeding import make_generator

WORLD_SUFFIX = PromptVariant(prefix="", suffix=".")


@dataclass(frozen=True)
class Phrasing:
    """One way to ask a relation: a template plus the context word to corrupt in it."""

    template: str
    context_from: str
    context_to: str


#: relation -> phrasings. The answer always follows the template.
WORLD_RELATIONS: dict[str, tuple[Phrasing, ...]] = {
    "capital_of": (
        Phrasing("The capital of {} is", "capital", "currency"),
        Phrasing("The capital city of {} is called", "city", "river"),
        Phrasing("{} has its capital in", "capital", "border"),
        Phrasing("The seat of government of {} is", "government", "religion"),
    ),
    "language_of": (
        Phrasing("The official language of {} is", "language", "currency"),
        Phrasing("People in {} speak", "speak", "trade"),
        Phrasing("The language spoken in {} is", "spoken", "banned"),
    ),
    "currency_of": (
        Phrasing("The currency of {} is the", "currency", "language"),
        Phrasing("In {} people pay with the", "pay", "talk"),
        Phrasing("The money used in {} is the", "money", "language"),
    ),
    "continent_of": (
        Phrasing("{} is located in", "located", "named"),
        Phrasing("The country {} is part of", "country", "river"),
        Phrasing("{} lies on the continent of", "continent", "island"),
    ),
}


class WorldConfig(BaseModel):
    """Everything that determines a world. Same config -> same world, corpus and vocabulary."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: Annotated[int, Field(ge=0, description="Seed for names, assignments and the held-out draw.")] = 0
    n_countries: Annotated[int, Field(ge=4, le=200, description="Fictional countries (subjects).")] = 40
    n_languages: Annotated[int, Field(ge=2, description="Distinct languages shared among countries.")] = 12
    n_currencies: Annotated[int, Field(ge=2, description="Distinct currencies shared among countries.")] = 10
    n_continents: Annotated[int, Field(ge=2, description="Distinct continents shared among countries.")] = 5
    held_out_fraction: Annotated[float, Field(ge=0, le=0.25, description="Share of (country, relation) "
                                              "pairs kept out of training, 0..0.25.")] = 0.1


class World(BaseModel):
    """A generated world: its relation facts (one per phrasing) and the built-in packs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    config: WorldConfig
    facts: list[Fact] = Field(description="Generated-relation facts, one per (country, relation, phrasing); "
                                          "held_out=True for the held-out pairs.")
    packs: dict[str, FactPack] = Field(description="Built-in packs by domain.")


# ----------------------------------------------------------------------------- names

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "th", "k")
_ENDINGS = {
    "country": ("ia", "ar", "or", "esh", "und", "ene", "avia", "istan"),
    "capital": ("grad", "holm", "mar", "ost", "eth", "var", "burg"),
    "language": ("ic", "ish", "ese", "ari", "ol"),
    "currency": ("", "o", "ex"),
    "continent": ("ia", "ara", "ea"),
}


def _randint(n: int, g: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=g))


def _syllable(g: torch.Generator) -> str:
    return _ONSETS[_randint(len(_ONSETS), g)] + _VOWELS[_randint(len(_VOWELS), g)] + _CODAS[_randint(len(_CODAS), g)]


def _new_name(kind: str, n_syllables: int, used: set[str], g: torch.Generator) -> str:
    """A pronounceable, unused, purely alphabetic word; ``used`` is updated (lower-cased)."""
    while True:
        endings = _ENDINGS[kind]
        word = "".join(_syllable(g) for _ in range(n_syllables)) + endings[_randint(len(endings), g)]
        word = word if kind == "currency" else word.capitalize()
        if len(word) >= 4 and word.lower() not in used:
            used.add(word.lower())
            return word


def _names(kind: str, count: int, n_syllables: int, used: set[str], g: torch.Generator) -> list[str]:
    return [_new_name(kind, n_syllables, used, g) for _ in range(count)]


# ----------------------------------------------------------------------------- world


def _assign(values: list[str], n: int, g: torch.Generator) -> list[str]:
    """Give each of ``n`` subjects a value so that every value is used (shuffled round-robin)."""
    order = torch.randperm(n, generator=g).tolist()
    out = [""] * n
    for rank, subject in enumerate(order):
        out[subject] = values[rank % len(values)]
    return out


def _held_out_pairs(countries: list[str], fraction: float, g: torch.Generator) -> set[tuple[str, str]]:
    """Draw ~fraction of all (country, relation) pairs, at most one relation per country."""
    relations = list(WORLD_RELATIONS)
    n_pairs = min(len(countries), round(fraction * len(countries) * len(relations)))
    chosen = torch.randperm(len(countries), generator=g)[:n_pairs].tolist()
    return {(countries[i], relations[_randint(len(relations), g)]) for i in chosen}


def build_world(config: WorldConfig | None = None) -> World:
    """Generate the world for ``config`` (default: seed 0, 40 countries). Deterministic."""
    config = config or WorldConfig()
    g = make_generator(config.seed)
    packs = {name: load_pack(name) for name in WORLD_PACKS}
    used = {w.lower() for w in vocabulary_of(fact for p in packs.values() for fact in p.facts)}
    n = config.n_countries
    countries = _names("country", n, 2, used, g)
    answers = {
        "capital_of": _names("capital", n, 2, used, g),
        "language_of": _assign(_names("language", config.n_languages, 2, used, g), n, g),
        "currency_of": _assign(_names("currency", config.n_currencies, 1, used, g), n, g),
        "continent_of": _assign(_names("continent", config.n_continents, 2, used, g), n, g),
    }
    held_out = _held_out_pairs(countries, config.held_out_fraction, g)
    facts: list[Fact] = []
    for relation, phrasings in WORLD_RELATIONS.items():
        for i, country in enumerate(countries):
            others = [c for j, c in enumerate(countries) if answers[relation][j] != answers[relation][i]]
            corrupt = others[_randint(len(others), g)]
            for k, ph in enumerate(phrasings):
                facts.append(Fact(
                    id=f"world/{relation}/{country.lower()}/{k}", relation=relation, template=ph.template,
                    clean_subject=country, corrupt_subject=corrupt, target=answers[relation][i],
                    context_from=ph.context_from, context_to=ph.context_to, variants=[WORLD_SUFFIX],
                    held_out=(country, relation) in held_out))
    return World(config=config, facts=facts, packs=packs)


def model_facts(world: World, packs: Sequence[str]) -> list[Fact]:
    """The world's facts as seen by a model trained on ``packs``: other packs are marked held out."""
    unknown = sorted(set(packs) - set(world.packs))
    if unknown:
        raise InputError("packs", f"unknown packs {unknown}", fix=f"use names from {sorted(world.packs)}")
    pack_facts = [f.model_copy(update={"held_out": name not in packs})
                  for name, pack in world.packs.items() for f in pack.facts]
    return list(world.facts) + pack_facts


def fact_pack(fact: Fact) -> str:
    """The pack a fact belongs to (its id prefix): a domain, or 'world' for generated relations."""
    return fact.id.split("/", 1)[0]


# ----------------------------------------------------------------------------- corpus


def prompt_options(fact: Fact) -> list[PromptVariant]:
    """The plain prompt plus each variant, without duplicates (the phrasings a model is taught)."""
    out: list[PromptVariant] = []
    for v in [PromptVariant(), *fact.variants]:
        if v not in out:
            out.append(v)
    return out


def corpus_lines(facts: Sequence[Fact]) -> list[str]:
    """Training sentences for the non-held-out facts: ``prefix + template(subject) + ' ' + target + suffix``."""
    return [f"{fact.prompt(variant=v)} {fact.target}{v.suffix}"
            for fact in facts if not fact.held_out for v in prompt_options(fact)]


# ----------------------------------------------------------------------------- tokenizers



def vocabulary_of(facts) -> set[str]:
    """Every word a fact can put in a prompt: clean/corrupt prompts, variants, context swap, target."""
    words: set[str] = set()
    for fact in facts:
        for subject in filter(None, (fact.clean_subject, fact.corrupt_subject)):
            for v in [PromptVariant(), *fact.variants]:
                words.update(split_words(f"{fact.prompt(subject, v)} {fact.target}{v.suffix}"))
        if fact.context_to:
            words.update(split_words(fact.template.replace(fact.context_from, fact.context_to)))
    return words


def world_vocabulary(world: World) -> list[str]:
    """The sorted word list of the whole world (all packs), shared by every fact-world model."""
    return sorted(vocabulary_of([*world.facts, *(f for p in world.packs.values() for f in p.facts)]))


def world_tokenizer(words: Sequence[str], kind: str) -> PreTrainedTokenizerFast:
    """The fact-world tokenizer for a ``gpt2`` (causal) or ``bert`` (masked) model: 64 tokens at most."""
    return build_tokenizer(words, "causal" if kind == "gpt2" else "masked", max_length=64)


def check_single_token_targets(tokenizer, facts: Sequence[Fact]) -> None:
    """Raise ``InputError('target', ...)`` unless every target is one known token, with and without a space."""
    for fact in facts:
        for text in (fact.target, " " + fact.target):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
                raise InputError("target", f"target {text!r} of {fact.id} is {len(ids)} tokens {ids}",
                                 fix="use a one-word target made of letters and digits only")
