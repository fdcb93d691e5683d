"""Prompts as edit sees them: subject positions in prefixed prompts, padded batches, seeded sampling.

* A prompt is ``prefix + template.format(subject)``; its *subject position* is the last token overlapping
  the subject's characters (ROME's "last subject token"), found from the tokenizer's offsets.
* :func:`sample` draws continuations with a KV cache and an explicit generator (top-k, as ROME's
  ``generate_fast``); rows of one call share their length, so no padding enters the cache.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import DynamicCache

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.seeding import make_generator


@dataclass
class Batch:
    """Right-padded prompts with the positions edit reads and writes."""

    ids: Tensor          # (rows, pos)
    mask: Tensor         # (rows, pos) 1 = real token
    subject: Tensor      # (rows,) last subject token
    last: Tensor         # (rows,) last prompt token (the next-token prediction is read here)


def subject_position(lm: LoadedModel, text: str, start: int, end: int, field: str) -> tuple[list[int], int]:
    """Token ids of ``text`` (with the tokenizer's special tokens) and the last token overlapping [start, end)."""
    enc = lm.tokenizer(text, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    hits = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    if not hits:
        raise InputError(field, f"the subject maps to no token in {text!r}", fix="check the subject and template")
    return ids, hits[-1]


def batch(lm: LoadedModel, templates: Sequence[str], subject: str, prefixes: Sequence[str], field: str) -> Batch:
    """Every (prefix, template) prompt about ``subject``, right-padded."""
    rows, subj = [], []
    for template in templates:
        for prefix in prefixes:
            start = len(prefix) + template.index("{}")
            ids, pos = subject_position(lm, prefix + template.format(subject), start, start + len(subject), field)
            rows.append(ids)
            subj.append(pos)
    return pad(lm, rows, subj)


def pad(lm: LoadedModel, rows: Sequence[Sequence[int]], subject: Sequence[int]) -> Batch:
    width = max(len(r) for r in rows)
    pad_id = lm.tokenizer.pad_token_id or 0
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return Batch(ids=ids.to(lm.device), mask=mask.to(lm.device), subject=torch.tensor(list(subject)),
                 last=torch.tensor([len(r) - 1 for r in rows]))


def logits_at_last(lm: LoadedModel, b: Batch) -> Tensor:
    """(rows, vocab) next-token logits at each row's last prompt token: the body's states there through the LM
    head (the head runs on one position per row, not all: a 262k vocabulary made it most of the cost)."""
    body = lm.adapter.module(lm.model, lm.adapter.base)
    h = body(input_ids=b.ids, attention_mask=b.mask).last_hidden_state                 # (rows, pos, d_model)
    return lm.adapter.logits_at(lm.model, h[torch.arange(len(b.last)), b.last.to(h.device)])


@torch.no_grad()
def sample(lm: LoadedModel, rows: Sequence[Sequence[int]], n_new: int, g: torch.Generator,
           top_k: int = 5) -> list[list[int]]:
    """Continue each row by ``n_new`` tokens drawn from the top-k of the next-token distribution (seeded)."""
    out: list[list[int]] = [list(r) for r in rows]
    by_len: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_len.setdefault(len(r), []).append(i)
    for idx in by_len.values():
        ids = torch.tensor([list(rows[i]) for i in idx], device=lm.device)
        cache, step = DynamicCache(), ids
        for _ in range(n_new):
            res = lm.model(input_ids=step, cache=cache, use_cache=True)
            logits = res.logits[:, -1].float()                                        # (rows, vocab)
            top = logits.topk(min(top_k, logits.shape[-1]), dim=-1)
            probs = torch.softmax(top.values, dim=-1).cpu()
            pick = top.indices.cpu().gather(1, torch.multinomial(probs, 1, generator=g))  # (rows, 1)
            for j, i in enumerate(idx):
                out[i].append(int(pick[j, 0]))
            step = pick.to(lm.device)
    return out


def bos(lm: LoadedModel) -> list[int]:
    """The ids the tokenizer puts before any text (its BOS, or nothing)."""
    return list(lm.tokenizer("", add_special_tokens=True)["input_ids"])


def context_prefixes(lm: LoadedModel, n: int, seed: int, length: int = 10) -> list[str]:
    """ROME's prefix contexts: ``''`` plus ``n`` short seeded samples from the model, each ending '. '."""
    if n == 0:
        return [""]
    starts = ["The", "Therefore", "Because", "I", "You"]
    g = make_generator(seed)
    lead = bos(lm)
    rows = [lead + list(lm.tokenizer(starts[i % len(starts)], add_special_tokens=False)["input_ids"])
            for i in range(n)]
    texts = [lm.tokenizer.decode(r[len(lead):], skip_special_tokens=True) for r in sample(lm, rows, length, g)]
    return [""] + [t.replace("{", "(").replace("}", ")").strip() + ". " for t in texts]
