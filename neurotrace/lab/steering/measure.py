"""Steered forward passes: next-token probabilities of target tokens, and greedy steered text.

The steering hook adds a vector to the activation at every chosen site from position ``start`` on:
``start = 0`` steers every token (``positions='all'``); ``start = prompt_len - 1`` steers the last prompt
token and, during generation, every generated token (``'last'``). With a KV cache each generated token is
steered once, when it is fed back, and keeps its steered keys and values.

Text: every alpha of one prompt is a row of one batched greedy ``generate`` on a KV cache.

Probabilities: prompts are grouped by token length; in each group every (vector, prompt) pair is one row
of an unpadded batch with its own added vector, so a sweep of ``k`` vectors costs ``k * n / batch`` forwards.
The effect read is ``p(targets)`` = the summed softmax probability of the target tokens at the last
position.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import GenerationConfig

from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter

MAX_ROWS = 256


def steer_hook(vectors: Tensor, start: int) -> Callable[..., Tensor]:
    """Add ``vectors`` (rows, width) to positions ``start:`` of an activation (rows, pos, width)."""
    def fn(act: Tensor, site: str) -> Tensor:
        out = act.clone()
        out[:, start:] += vectors.to(device=act.device, dtype=act.dtype)[:, None, :]
        return out

    return fn


@torch.no_grad()
def target_probs(lm: LoadedModel, ids: Sequence[Sequence[int]], sites: Sequence[str], vectors: Tensor,
                 target_ids: Sequence[int], positions: str, reporter: Reporter) -> Tensor:
    """p(targets) for every added vector and prompt: (vectors, prompts) float64."""
    out = torch.zeros(vectors.shape[0], len(ids), dtype=torch.float64)
    by_len: dict[int, list[int]] = {}
    for i, seq in enumerate(ids):
        by_len.setdefault(len(seq), []).append(i)
    targets = torch.tensor(list(target_ids), dtype=torch.long)
    done = 0
    for length, prompts in sorted(by_len.items()):
        start = 0 if positions == "all" else length - 1
        pairs = [(v, p) for v in range(vectors.shape[0]) for p in prompts]
        for b0 in range(0, len(pairs), MAX_ROWS):
            reporter.step(done, vectors.shape[0] * len(ids), "steered forwards")
            chunk = pairs[b0:b0 + MAX_ROWS]
            x = torch.tensor([list(ids[p]) for _, p in chunk], dtype=torch.long, device=lm.device)  # (rows, pos)
            vec = vectors[[v for v, _ in chunk]]                                               # (rows, width)
            with hooked(lm.model, lm.adapter, {s: steer_hook(vec, start) for s in sites}):
                logits = lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[:, -1]   # (rows, vocab)
            probs = torch.softmax(logits.double(), -1)[:, targets.to(logits.device)].sum(-1).cpu()
            for (v, p), value in zip(chunk, probs.tolist(), strict=True):
                out[v, p] = value
            done += len(chunk)
    return out


def steered_texts(lm: LoadedModel, ids: Sequence[int], sites: Sequence[str], vectors: Tensor, positions: str,
                  max_new_tokens: int) -> list[str]:
    """The texts of :func:`steered_generations`."""
    return [text for _, text in steered_generations(lm, ids, sites, vectors, positions, max_new_tokens)]


@torch.no_grad()
def steered_generations(lm: LoadedModel, ids: Sequence[int], sites: Sequence[str], vectors: Tensor, positions: str,
                        max_new_tokens: int) -> list[tuple[list[int], str]]:
    """Greedy continuations (tokens, text) of one prompt, one batch row per added vector (rows, width), on a KV
    cache.

    The prefill sees the whole prompt (steered from ``start``); each later forward sees only the newest
    generated token, which is always steered: the semantics of the module docstring.
    """
    start = 0 if positions == "all" else len(ids) - 1

    def fn(act: Tensor, site: str) -> Tensor:
        out = act.clone()
        out[:, start if act.shape[1] > 1 else 0:] += vectors.to(device=act.device, dtype=act.dtype)[:, None, :]
        return out

    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    x = torch.tensor([list(ids)] * vectors.shape[0], dtype=torch.long, device=lm.device)    # (rows, pos)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tok.eos_token_id,
                              pad_token_id=pad)
    with hooked(lm.model, lm.adapter, {s: fn for s in sites}):
        out = lm.model.generate(x, attention_mask=torch.ones_like(x), generation_config=config)
    texts = []
    for row in out[:, len(ids):].tolist():
        if tok.eos_token_id in row:
            row = row[: row.index(tok.eos_token_id)]
        texts.append((row, tok.decode(row, skip_special_tokens=True)))
    return texts


def neutral_edit(lm: LoadedModel, sites: Sequence[str], vector: Tensor) -> Callable[[Sequence[int]], Any]:
    """ids -> the context adding ``vector`` (width,) at every position of one full forward (the damage check)."""
    def edit_for(ids: Sequence[int]) -> Any:
        return hooked(lm.model, lm.adapter, {s: steer_hook(vector[None], 0) for s in sites})
    return edit_for
