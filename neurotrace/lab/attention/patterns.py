"""Attention patterns and head-type scores.

Patterns come from the HuggingFace model itself (``output_attentions=True``) with the *eager* attention
implementation, switched on for the forward and restored afterwards: fused kernels (sdpa, flash) do not
return weights. The eager path applies each layer's own mask, so sliding-window layers show zeros beyond
their window, and grouped-query attention (GQA) returns one pattern per *query* head (key/value heads are
shared within a group).

Head-type scores (Olsson et al. 2022; TransformerLens conventions) are mean attention weights on a
repeated random sequence ``[bos] r r`` (``r`` = ``n`` random tokens, seeded):

* previous-token: query ``q`` on source ``q - 1`` (every query after the first token);
* duplicate-token: query ``o + n + i`` on ``o + i``, the same token's earlier copy;
* induction: query ``o + n + i`` on ``o + i + 1``, the token that followed the earlier copy;
* subject (on the prompt): the last position's total weight on the subject's tokens.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.seeding import make_generator


@contextmanager
def eager_attention(lm: LoadedModel) -> Iterator[str]:
    """Switch ``lm`` to eager attention for the block (hold ``lm.lock``); yields the implementation used."""
    before = getattr(lm.model.config, "_attn_implementation", None) or "eager"
    if before != "eager":
        lm.model.set_attn_implementation("eager")
    try:
        yield "eager"
    finally:
        if before != "eager":
            lm.model.set_attn_implementation(before)


@torch.no_grad()
def attention_patterns(lm: LoadedModel, ids: Tensor) -> Tensor:
    """(layers, heads, query, key) attention weights of ``ids`` (pos,)."""
    with eager_attention(lm):
        ids = ids[None].to(lm.device)
        out = lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise InputError("model", f"{lm.ref.model} returns no attention weights",
                         fix="use a model whose eager attention returns weights")
    return torch.stack([a[0] for a in out.attentions]).float().cpu()


def repeated_sequence(lm: LoadedModel, n: int, seed: int) -> tuple[Tensor, int]:
    """``[bos] r r`` with ``r`` = ``n`` random non-special tokens; returns (ids, offset of the first r)."""
    special = set(getattr(lm.tokenizer, "all_special_ids", []) or [])
    vocab = torch.tensor([i for i in range(int(lm.config.vocab_size)) if i not in special])
    r = vocab[torch.randint(len(vocab), (n,), generator=make_generator(seed))]
    bos = lm.tokenizer.bos_token_id
    prefix = torch.tensor([bos]) if bos is not None else torch.tensor([], dtype=torch.long)
    return torch.cat([prefix, r, r]).long(), len(prefix)


def sequence_scores(pattern: Tensor, n: int, offset: int) -> dict[str, Tensor]:
    """previous-token, duplicate- and induction scores (layers, heads) from the patterns of ``[bos] r r``."""
    q = torch.arange(offset + 1, pattern.shape[-1])
    second = torch.arange(n) + offset + n
    return {"previous_token": pattern[..., q, q - 1].mean(-1),
            "duplicate_token": pattern[..., second, second - n].mean(-1),
            "induction": pattern[..., second, second - n + 1].mean(-1)}


def subject_positions(lm: LoadedModel, prompt: str, subject: str) -> list[int]:
    """Token positions of the first occurrence of ``subject`` in ``prompt``; InputError('subject') if none."""
    start = prompt.find(subject)
    if not subject.strip() or start < 0:
        raise InputError("subject", f"{subject!r} does not occur in the prompt", fix="give a substring of the prompt")
    end = start + len(subject)
    enc = lm.tokenizer(prompt, return_offsets_mapping=True)
    hits = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start]
    if not hits:
        raise InputError("subject", f"{subject!r} maps to no token", fix="give a substring of the prompt")
    return hits
