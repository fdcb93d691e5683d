"""Tokens as the experiments see them: the one "target token" rule, and readable token text.

*Target token.* A fact's answer follows its prompt after a space, so the scored token is the first
token that ``prompt + " " + target`` adds to ``prompt`` (``' Paris'`` for GPT-2, ``'▁Paris'`` for
SentencePiece models). When the tokenizer merges across the boundary, the answer is tokenized on its
own with a leading space. A prompt that ends in whitespace (a chat template's ``"assistant\\n"``, where the
answer starts a new line) gets no separating space: the answer's own first token (``'Rome'``, not ``' Rome'``).
trace, capture, fit_sae and intervene all use this rule.

*Readable text.* Byte-level BPE vocabularies store ``' Tower'`` as ``'ĠTower'`` and SentencePiece as
``'▁Tower'``; figures, tables and summaries show the decoded text of each token instead
(:func:`token_texts`), with the leading space kept.

>>> from neurotrace.lab.model.access.wordlevel import build_tokenizer
>>> tok = build_tokenizer(["the", "capital", "of", "france", "is", "paris"], "causal")
>>> target_token_ids(tok, "the capital of france is", "paris")
[7]
"""

from collections.abc import Sequence
from typing import Any

from neurotrace.lab.errors import InputError


def token_ids(tokenizer: Any, text: str) -> list[int]:
    """``text``'s token ids without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def target_token_ids(tokenizer: Any, prompt: str, target: str) -> list[int]:
    """Token ids the target adds after ``prompt`` (with the separating space unless the prompt ends in
    whitespace), e.g. [' Paris'] for GPT-2."""
    target = target.strip()
    sep = "" if prompt[-1:].isspace() else " "
    base = token_ids(tokenizer, prompt) if prompt else []
    full = token_ids(tokenizer, prompt + sep + target)
    if len(full) > len(base) and full[: len(base)] == base:
        return full[len(base):]
    return token_ids(tokenizer, sep + target)


def target_id(tokenizer: Any, target: str, prompt: str = "", field: str = "target") -> int:
    """The scored (first) token of ``target`` after ``prompt``; InputError naming ``field`` if there is none."""
    ids = target_token_ids(tokenizer, prompt, target)
    if not ids:
        raise InputError(field, f"target {target!r} tokenizes to nothing", fix="give a word")
    return int(ids[0])


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token's decoded text (``' Tower'``, not ``'ĠTower'``); special tokens keep their names."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out = []
    for i in ids:
        i = int(i)
        if i in special:
            out.append(tokenizer.convert_ids_to_tokens(i))
        else:
            out.append(tokenizer.decode([i], clean_up_tokenization_spaces=False))
    return out
