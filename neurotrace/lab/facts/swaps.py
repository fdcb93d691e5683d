"""Subject swaps that keep the prompt's length: find the facts whose corrupt subject changes it, and suggest
corrupt subjects that do not.

A subject-swap trace restores clean states position by position, so the corrupt prompt must have exactly the
clean prompt's token count in every model traced (``trace`` skips the swap for a fact where it does not).
Whether it does depends on each tokenizer (``' Burj Khalifa'`` is 3 tokens in one model, 2 in another), so
generate_facts checks each fact in each model it validates and, for a fact that fails, suggests other subjects
of the same relation with a different answer - drawn from the dataset itself and the built-in packs - whose
prompt has the clean prompt's length (and not its tokens) in *every* one of those models, or, when no subject
fits them all, each model's own.
"""

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.facts.packs import load_all_packs
from neurotrace.lab.facts.tokens import ModelVocab
from neurotrace.lab.model.access.tokens import token_ids

MAX_SUGGESTIONS = 3


class SwapMismatch(BaseModel):
    """A fact whose corrupt subject changes the prompt's token count in some model."""

    model_config = ConfigDict(extra="forbid")
    fact_id: str
    corrupt_subject: str
    tokens: dict[str, list[int]] = Field(description="Per model where the length changes: [clean, corrupt] "
                                                     "prompt token counts.")
    suggestions: list[str] = Field(default_factory=list, description="Subjects of the same relation with "
                                   "another answer whose prompt has the clean length in every model checked.")
    by_model: dict[str, list[str]] = Field(default_factory=dict, description="When no subject fits every model: "
                                           "each model's own same-length subjects (trace the models apart).")


def _pool(facts: list[Fact]) -> list[Fact]:
    """The dataset's facts, then every built-in pack's (candidates for a corrupt subject)."""
    return [*facts, *(f for pack in load_all_packs().values() for f in pack.facts)]


def _same_relation(fact: Fact, other: Fact) -> bool:
    return other.relation == fact.relation if fact.relation else other.template == fact.template


def _candidates(fact: Fact, pool: Iterable[Fact]) -> list[str]:
    seen = {fact.clean_subject.strip().lower(), (fact.corrupt_subject or "").strip().lower()}
    out = []
    for other in pool:
        subject = other.clean_subject.strip()
        if (_same_relation(fact, other) and other.target.strip().lower() != fact.target.strip().lower()
                and subject.lower() not in seen):
            seen.add(subject.lower())
            out.append(subject)
    return out


def _fits(vocab: ModelVocab, fact: Fact, subject: str, clean: list[int]) -> bool:
    ids = token_ids(vocab.tokenizer, fact.prompt(subject))
    return len(ids) == len(clean) and ids != clean


def swap_mismatches(facts: list[Fact], vocabs: list[ModelVocab]) -> list[SwapMismatch]:
    """Each fact whose corrupt subject changes the prompt's token count in one of ``vocabs``, with up to
    :data:`MAX_SUGGESTIONS` same-length corrupt subjects for all of them (in the pool's order)."""
    out: list[SwapMismatch] = []
    pool: list[Fact] | None = None
    for fact in facts:
        if not fact.corrupt_subject:
            continue
        clean = {v.name: token_ids(v.tokenizer, fact.prompt()) for v in vocabs}
        counts = {v.name: [len(clean[v.name]), len(token_ids(v.tokenizer, fact.prompt(fact.corrupt_subject)))]
                  for v in vocabs}
        bad = {name: n for name, n in counts.items() if n[0] != n[1]}
        if not bad:
            continue
        pool = _pool(facts) if pool is None else pool
        candidates = _candidates(fact, pool)
        each = {v.name: [s for s in candidates if _fits(v, fact, s, clean[v.name])] for v in vocabs}
        fits = [s for s in candidates if all(s in each[v.name] for v in vocabs)]
        by_model = {} if fits or len(vocabs) == 1 else {name: found[:MAX_SUGGESTIONS] for name, found in each.items()}
        out.append(SwapMismatch(fact_id=fact.id, corrupt_subject=fact.corrupt_subject, tokens=bad,
                                suggestions=fits[:MAX_SUGGESTIONS], by_model=by_model))
    return out
