"""Text corpora for capture (and fit_sae's held-out splice): the built-in corpus or a file, cut into token contexts.

* :func:`corpus_texts` reads a corpus by name: a built-in corpus (:data:`BUILTIN`, installed with the package:
  ``python-docs``, see its card ``neurotrace/data/corpus/python-docs.md``) or a UTF-8 ``.txt`` / ``.jsonl`` file
  from the input directories, under the same sandbox and size cap as every file input
  (:class:`neurotrace.lab.inputs.InputPolicy`). A text file's blank lines separate paragraphs; a JSONL file holds
  one document per line, a JSON string or an object with a ``text`` field. Documents are split into passages of
  whole paragraphs (about :data:`PASSAGE_CHARS` characters) so that shuffling mixes sources even on a small budget.
* :func:`token_contexts` shuffles the passages with a seed, tokenizes them in that order until the token budget
  is met, joins them with the end-of-text token (as SAELens joins a dataset's rows) and cuts fixed contexts of
  ``context_size`` tokens, each optionally starting with BOS; the contexts are then shuffled with the same seed.
  The same texts, tokenizer and arguments always give the same tensor.
"""

import functools
import gzip
import json
import random
from importlib import resources
from typing import Any

import torch

from neurotrace.lab.errors import InputError

#: built-in corpora: name -> package data file (JSONL, gzip) under neurotrace/data/corpus
BUILTIN = {"python-docs": "python-docs.jsonl.gz"}
DEFAULT_CORPUS = "python-docs"
PASSAGE_CHARS = 4000
FIELD = "corpus"


@functools.lru_cache(maxsize=2)
def _builtin_passages(name: str) -> tuple[str, ...]:
    data = resources.files("neurotrace").joinpath("data", "corpus", BUILTIN[name]).read_bytes()
    docs = [json.loads(line)["text"] for line in gzip.decompress(data).decode("utf-8").splitlines() if line]
    return tuple(p for doc in docs for p in passages(doc))


def _documents(text: str, name: str, field: str) -> list[str]:
    if not name.lower().endswith(".jsonl"):
        return [text]
    docs = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(field, f"line {i} of {name} is not JSON ({exc.msg})",
                             fix="give one JSON string or {\"text\": ...} object per line") from exc
        if isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            raise InputError(field, f"line {i} of {name} is neither a JSON string nor an object with a string "
                             "`text`", fix="give one JSON string or {\"text\": ...} object per line")
        docs.append(item)
    return docs


def passages(document: str, limit: int = PASSAGE_CHARS) -> list[str]:
    """``document`` cut at paragraph (blank line or line) boundaries into pieces of about ``limit`` characters."""
    pieces, current, size = [], [], 0
    for para in (p.strip() for p in document.replace("\r\n", "\n").split("\n")):
        if not para:
            continue
        if current and size + len(para) > limit:
            pieces.append("\n".join(current))
            current, size = [], 0
        current.append(para)
        size += len(para) + 1
    if current:
        pieces.append("\n".join(current))
    return pieces


def corpus_texts(lab: Any, name_or_file: str, field: str = FIELD) -> list[str]:
    """The passages of a built-in corpus (by name) or of a UTF-8 .txt/.jsonl file from the input directories."""
    if name_or_file in BUILTIN:
        return list(_builtin_passages(name_or_file))
    else:
        if not name_or_file.lower().endswith((".txt", ".jsonl", ".text", ".md")):
            raise InputError(field, f"{name_or_file!r} is neither a built-in corpus nor a .txt/.jsonl file",
                             fix=f"use a built-in corpus ({', '.join(BUILTIN)}) or a UTF-8 .txt or .jsonl file "
                             "under the input directories")
        text, shown = lab.inputs.read_text(name_or_file, field)
        docs = _documents(text, shown, field)
    texts = [p for doc in docs for p in passages(doc)]
    if not texts:
        raise InputError(field, f"corpus {shown} holds no text", fix="give a file with some text in it")
    return texts


def _separator(tokenizer: Any) -> int | None:
    for attr in ("eos_token_id", "sep_token_id", "bos_token_id"):
        tid = getattr(tokenizer, attr, None)
        if tid is not None:
            return int(tid)
    return None


def _bos(tokenizer: Any) -> int:
    for attr in ("bos_token_id", "cls_token_id", "eos_token_id"):
        tid = getattr(tokenizer, attr, None)
        if tid is not None:
            return int(tid)
    raise InputError("prepend_bos", "the tokenizer has no BOS, CLS or end-of-text token to start contexts with",
                     fix="pass prepend_bos=false")


def token_contexts(tokenizer: Any, texts: list[str], context_size: int = 128, max_tokens: int | None = 100_000,
                   seed: int = 0, prepend_bos: bool = True) -> torch.Tensor:
    """``[n_contexts, context_size]`` token ids cut from ``texts`` (see the module docstring). ``max_tokens``
    bounds the tokens kept (``n_contexts = max_tokens // context_size``); None keeps every whole context."""
    head = [_bos(tokenizer)] if prepend_bos else []
    body = context_size - len(head)
    if body < 1:
        raise InputError("context_size", f"context_size {context_size} leaves no room for text",
                         fix="use a context_size of at least 2")
    want = None if max_tokens is None else max_tokens // context_size
    if want is not None and want < 1:
        raise InputError("max_tokens", f"max_tokens {max_tokens} is less than one context of {context_size}",
                         fix=f"give max_tokens of at least {context_size}")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    sep = _separator(tokenizer)
    stream: list[int] = []
    need = None if want is None else want * body
    for start in range(0, len(order), 64):
        batch = [texts[i] for i in order[start:start + 64]]
        for ids in tokenizer(batch, add_special_tokens=False).input_ids:
            stream.extend(ids)
            if sep is not None:
                stream.append(sep)
        if need is not None and len(stream) >= need:
            break
    n = len(stream) // body if want is None else min(want, len(stream) // body)
    if n < 1:
        raise InputError(FIELD, f"the corpus gives {len(stream)} tokens, less than one context of {context_size}",
                         fix="give more text or a smaller context_size")
    body_ids = torch.tensor(stream[:n * body], dtype=torch.long).view(n, body)
    if head:
        body_ids = torch.cat([torch.full((n, 1), head[0], dtype=torch.long), body_ids], dim=1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return body_ids[perm]
