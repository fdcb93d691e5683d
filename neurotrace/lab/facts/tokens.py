"""Checking facts against the tokenizers of the models that will be traced.

Tracing reads the probability of *one* token: the first token the model would emit after the prompt
(causal LMs) or the token at ``[MASK]`` (masked LMs). So a fact is usable for a model only if its target
is exactly one token there. We find the target's tokens by tokenizing ``prompt`` and
``prompt + " " + target`` and taking what the second adds: this gives the *leading-space* form BPE
tokenizers use mid-sentence (GPT-2's ``" Paris"``, not ``"Paris"``), and the plain word for WordPiece
and word-level vocabularies. A target that maps to the unknown token is not in the vocabulary at all.

Multi-token targets follow a stated policy: ``"error"`` rejects them; ``"first_token"`` keeps them and
scores only their first token (the report says which token that is). Subject swaps are also checked:
if the clean and corrupt subjects tokenize identically the swap changes nothing. A masked LM whose
tokenizer has no mask token cannot be asked for the target and is refused outright.

Only tokenizers and configs are read here; no weights are loaded.
"""

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.errors import InputError, LabError
from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.model.access.tokens import target_token_ids, token_ids
from neurotrace.lab.model.weights.loading import load_tokenizer

MultiTokenPolicy = Literal["error", "first_token"]


@dataclass
class ModelVocab:
    """A model's tokenizer and LM kind (internal record)."""

    name: str
    source: str
    lm_kind: Literal["causal", "masked"]
    tokenizer: Any


class TokenCheck(BaseModel):
    """How one fact tokenizes for one model."""

    model_config = ConfigDict(extra="forbid")
    fact_id: str
    ok: bool = Field(description="True if the fact is usable for this model (under the multi-token policy).")
    target_tokens: list[str] = Field(description="The target's tokens after the prompt (leading space "
                                                 "included where the tokenizer uses one).")
    target_token_id: int | None = Field(description="The token id scored by trace (the first target token).")
    prompt_tokens: int = Field(description="Tokens in the clean prompt.")
    corrupt_prompt_tokens: int | None = Field(description="Tokens in the prompt with the corrupt subject.")
    problem: str | None = Field(None, description="Why the fact is unusable, if it is.")
    problem_field: str | None = Field(None, description="The fact field at fault, if any.")
    notes: list[str] = Field(default_factory=list, description="Warnings that do not make the fact unusable.")


class ModelReport(BaseModel):
    """Validation of every fact against one model's tokenizer."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="The model name as requested.")
    source: str = Field(description="Resolved path or hub id.")
    lm_kind: Literal["causal", "masked"]
    mask_token: str | None = Field(description="The mask token (masked LMs).")
    multi_token_policy: MultiTokenPolicy
    n_ok: int = Field(description="Facts usable for this model.")
    n_multi_token: int = Field(description="Facts whose target is more than one token.")
    checks: list[TokenCheck]


def load_vocab(name: str, *, trust_remote_code: bool = False) -> ModelVocab:
    """Tokenizer + LM kind of ``name`` (embedded or catalog name, hub id, directory, ``BASE+ADAPTER``);
    weights are not loaded."""
    try:
        only = load_tokenizer(name, trust_remote_code=trust_remote_code)
    except LabError as exc:     # name the request's field (the loaders name 'model')
        raise type(exc)("models", exc.message, fix=exc.fix) from exc
    if only.lm_kind == "masked" and only.tokenizer.mask_token is None:
        raise InputError("models", f"{name!r} is a masked LM but its tokenizer has no mask token",
                         fix="use a tokenizer with a mask token (e.g. [MASK]) or a causal LM")
    return ModelVocab(name=name, source=only.source, lm_kind=only.lm_kind, tokenizer=only.tokenizer)


def check_fact(vocab: ModelVocab, fact: Fact, policy: MultiTokenPolicy) -> TokenCheck:
    tok = vocab.tokenizer
    prompt = fact.prompt()
    ids = target_token_ids(tok, prompt, fact.target)
    pieces = tok.convert_ids_to_tokens(ids)
    clean_ids = token_ids(tok, prompt)
    corrupt_ids = token_ids(tok, fact.prompt(fact.corrupt_subject)) if fact.corrupt_subject else None
    problem, field, notes = None, None, []
    unk = tok.unk_token_id
    if not ids:
        problem, field = f"target {fact.target!r} tokenizes to nothing for {vocab.name}", "target"
    elif unk is not None and unk in ids:
        problem, field = f"target {fact.target!r} is not in the vocabulary of {vocab.name} (unknown token)", "target"
    elif len(ids) > 1 and policy == "error":
        problem, field = (f"target {fact.target!r} is {len(ids)} tokens for {vocab.name} ({pieces}); trace "
                          "scores one token", "target")
    elif len(ids) > 1:
        notes.append(f"multi-token target: only the first token {pieces[0]!r} is scored (policy first_token)")
    if problem is None and corrupt_ids is not None and corrupt_ids == clean_ids:
        problem, field = (f"clean and corrupt subjects tokenize identically for {vocab.name}, so a subject "
                          "swap changes nothing", "corrupt_subject")
    if corrupt_ids is not None and len(corrupt_ids) != len(clean_ids):
        notes.append(f"subject swap changes the prompt length ({len(clean_ids)} -> {len(corrupt_ids)} tokens)")
    if unk is not None and unk in clean_ids:
        notes.append("the prompt contains unknown tokens")
    return TokenCheck(fact_id=fact.id, ok=problem is None, target_tokens=pieces,
                      target_token_id=ids[0] if ids and problem is None else None, prompt_tokens=len(clean_ids),
                      corrupt_prompt_tokens=None if corrupt_ids is None else len(corrupt_ids), problem=problem,
                      problem_field=field, notes=notes)


def check_model(vocab: ModelVocab, facts: list[Fact], policy: MultiTokenPolicy) -> ModelReport:
    checks = [check_fact(vocab, f, policy) for f in facts]
    return ModelReport(model=vocab.name, source=vocab.source, lm_kind=vocab.lm_kind,
                       mask_token=vocab.tokenizer.mask_token if vocab.lm_kind == "masked" else None,
                       multi_token_policy=policy, n_ok=sum(c.ok for c in checks),
                       n_multi_token=sum(len(c.target_tokens) > 1 for c in checks), checks=checks)
