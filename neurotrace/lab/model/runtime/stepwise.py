"""Greedy generation, one hook context per forward pass: full recomputation or the KV cache.

Capture and intervene hook activations by *token position* and by *step*. **Recomputation** runs every
forward over the whole sequence: forward ``k`` sees the prompt plus the first ``k`` generated tokens,
so position ``p`` is always token ``p`` and a hook installed for forward ``k`` affects only that
forward's prediction. It costs ``O(n^2)`` positions over ``n`` new tokens.

**KV-cache path** (``incremental``): forward 0 runs the prompt and keeps the keys and values; forward
``k >= 1`` feeds only the newest token over that cache, ``O(n)`` positions in all. Position ``p`` then
holds the activations computed in the forward where ``p`` was newest, so the path equals recomputation
exactly when every position's edits are the same in every forward from the one where it is newest on
(none at all, or step-independent position-wise edits; :mod:`neurotrace.lab.capture.generation`
decides this per request). It equals recomputation to float precision, not bit for bit, so
comparisons that expect exact zeros must use one path for both sides. Hooks see only the new
position (``(1, 1, ...)``) in forwards ``k >= 1``; ``context_at(k, start)`` tells them the absolute
position ``start`` of the forward's first token (0 when recomputing). Masked LMs always recompute.

``forced`` tokens give teacher forcing: the continuation is fixed and only the predictions are read.
On the KV-cache path that is *one* forward over the prompt and the forced tokens, run inside
``context_at(last step, 0)``: under the same condition, each position's edits in the last forward are
those of the forward where it is newest, so every step's prediction is read from that one pass.
"""

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import DynamicCache

from neurotrace.lab.model.runtime.nnsight_backend import Forward, routed_forward
from neurotrace.lab.model.weights.loading import LoadedModel


@dataclass
class Continuation:
    tokens: list[int] = field(default_factory=list)        # generated (or forced) tokens
    logits: list[Float[Tensor, " vocab"]] = field(default_factory=list)  # float32 at the newest position, per forward
    forwards: int = 0


def prediction_position(lm: LoadedModel, ids: Sequence[int]) -> int:
    """Where the model predicts the answer: the last token (causal) or the mask token (masked)."""
    if lm.lm_kind == "masked":
        mask_id = lm.tokenizer.mask_token_id
        if mask_id is not None and mask_id in ids:
            return list(ids).index(mask_id)
    return len(ids) - 1


@torch.no_grad()
def forward_logits(lm: LoadedModel, ids: Sequence[int], forward: Forward | None = None) -> Float[Tensor, "pos vocab"]:
    """Logits (pos, vocab) of one unbatched forward pass (float32, on the model's device); ``forward``
    replaces ``lm.model`` (nnsight's traced forward, see :func:`routed_forward`)."""
    x = torch.tensor([list(ids)], dtype=torch.long, device=lm.device)
    return (forward or lm.model)(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float()


ContextAt = Callable[[int, int], AbstractContextManager]     # (forward k, first fed position) -> hooks


def first_fed_position(k: int, prompt_len: int, incremental: bool) -> int:
    """The absolute position of the first token forward ``k`` feeds (0 when recomputing)."""
    return prompt_len + k - 1 if incremental and k > 0 else 0


@torch.no_grad()
def continue_greedy(lm: LoadedModel, ids: Sequence[int], max_new_tokens: int, *,
                    context_for: Callable[[int], AbstractContextManager] | None = None,
                    context_at: ContextAt | None = None,
                    forced: Sequence[int] | None = None, stop_at_eos: bool = True,
                    choose: Callable[[Float[Tensor, " vocab"]], int] | None = None, incremental: bool = False
                    ) -> Continuation:
    """Run ``max(1, max_new_tokens)`` forwards (fewer if EOS); forward ``k`` runs inside ``context_for(k)``
    (or ``context_at(k, start)``, ``start`` = the absolute position of its first fed token).

    Forward 0 covers the prompt; the prediction read from it is at :func:`prediction_position`. With
    ``max_new_tokens == 0`` only that forward runs and nothing is generated. ``choose(logits) -> token``
    replaces the argmax (e.g. a seeded sampler). ``incremental`` picks the KV-cache path (see the
    module docstring for when it is exact; teacher forcing is then a single forward).
    """
    if context_at is None:
        context_at = (lambda k, _start: context_for(k)) if context_for is not None else (lambda _k, _s: nullcontext())
    with routed_forward(lm) as forward:  # backend='nnsight': the contexts' hooks run in nnsight's trace
        return _greedy(lm, ids, max_new_tokens, context_at, forced, stop_at_eos, choose, incremental, forward)


def _greedy(lm: LoadedModel, ids: Sequence[int], max_new_tokens: int, context_at: ContextAt,
            forced: Sequence[int] | None, stop_at_eos: bool, choose: Callable[[Tensor], int] | None,
            incremental: bool, forward: Forward | None) -> Continuation:
    incremental = incremental and lm.lm_kind == "causal"
    if forced is not None and incremental:
        return _forced_once(lm, ids, forced, context_at, forward)
    out = Continuation()
    eos = lm.tokenizer.eos_token_id if stop_at_eos else None
    seq = list(ids)
    n_forwards = max(1, max_new_tokens) if forced is None else max(1, len(forced))
    step = _Stepper(lm, incremental, forward)
    for k in range(n_forwards):
        with context_at(k, first_fed_position(k, len(ids), incremental)):
            logits = step(seq)
        pos = prediction_position(lm, seq) if k == 0 else len(seq) - 1
        out.logits.append(logits[pos if logits.shape[0] == len(seq) else -1].cpu())
        out.forwards += 1
        if max_new_tokens == 0 and forced is None:
            break
        if forced is not None:
            nxt = int(forced[k])
        else:
            row = out.logits[-1].to(logits.device)
            nxt = int(row.argmax()) if choose is None else int(choose(row))
        out.tokens.append(nxt)
        if (forced is None and eos is not None and nxt == eos) or k == n_forwards - 1:
            break
        seq.append(nxt)
    return out


def _forced_once(lm: LoadedModel, ids: Sequence[int], forced: Sequence[int], context_at: ContextAt,
                 forward: Forward | None = None) -> Continuation:
    """Teacher forcing in one forward over ``ids + forced[:-1]``, inside the last step's context."""
    n = max(1, len(forced))
    seq = list(ids) + list(forced[:n - 1])
    with context_at(n - 1, 0):
        logits = forward_logits(lm, seq, forward)
    rows = [prediction_position(lm, ids)] + [len(ids) + k - 1 for k in range(1, n)]
    return Continuation(tokens=[int(t) for t in forced[:n]], logits=list(logits[rows].cpu().unbind(0)), forwards=1)


class _Stepper:
    """One forward per call: the whole sequence (recompute), or only the tokens the cache lacks."""

    def __init__(self, lm: LoadedModel, incremental: bool, forward: Forward | None = None) -> None:
        self.lm, self.cache = lm, DynamicCache() if incremental else None
        self.forward = forward or lm.model

    def __call__(self, seq: Sequence[int]) -> Float[Tensor, "new vocab"]:
        """Logits (new positions, vocab), float32: every position when recomputing."""
        if self.cache is None:
            return forward_logits(self.lm, seq, self.forward)
        seen = self.cache.get_seq_length()
        x = torch.tensor([list(seq[seen:])], dtype=torch.long, device=self.lm.device)
        mask = torch.ones((1, len(seq)), dtype=torch.long, device=self.lm.device)
        out = self.forward(input_ids=x, attention_mask=mask, cache=self.cache, use_cache=True)
        return out.logits[0].float()
