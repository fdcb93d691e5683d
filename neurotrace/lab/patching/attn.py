"""Head-internal patching: a head's queries, keys, values or attention pattern, through HF's attention interface.

The model's attention modules call ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`` with per-head
``query (B, H, P, d)``, ``key`` / ``value (B, H_kv, P, d)`` (after rotary embeddings) and the mask. For the
block of :func:`attention_edits` the model uses an implementation registered here that records or rewrites
those tensors, then runs the model's own eager attention (softcapping, sinks and sliding windows
included). A patched pattern replaces a head's weights after the softmax: its output becomes
``pattern_clean @ value`` (value repeated over the query heads of its GQA group). Rotary embeddings depend
only on the position, which clean and corrupt runs share, so patching rotated queries/keys equals patching
them before the rotation. TransformerLens equivalents: ``get_act_patch_attn_head_{q,k,v,pattern}_all_pos``.
"""

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.weights.loading import LoadedModel

IMPL = "neurotrace_patch"
PARTS = ("q", "k", "v", "pattern")
_local = threading.local()


@dataclass
class AttnEdits:
    """What the attention function does: record every part (clean run) or patch rows of a batch."""

    record: dict[tuple[int, str], Tensor] | None = None                   # (layer, part) -> (1, H, P, .)
    patches: dict[int, list[tuple[int, str, int]]] = field(default_factory=dict)  # layer -> (row, part, head)
    clean: dict[tuple[int, str], Tensor] = field(default_factory=dict)
    per_row: bool = False       # take row r's patch from row r of ``clean`` (else from row 0)


def _eager(module: torch.nn.Module):
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise InputError("components", f"{type(module).__name__} has no eager attention to patch inside",
                         fix="use head_out / head_out_pos for this model")
    return fn


def _attention(module, query, key, value, attention_mask, **kwargs):
    edits: AttnEdits = _local.edits
    layer = module.layer_idx
    parts = {"q": query, "k": key, "v": value}
    todo = edits.patches.get(layer, [])
    if any(p != "pattern" for _, p, _ in todo):
        parts = {k: t.clone() for k, t in parts.items()}
        for row, part, head in todo:
            if part != "pattern":
                parts[part][row, head] = edits.clean[(layer, part)][row if edits.per_row else 0, head]
    out, weights = _eager(module)(module, parts["q"], parts["k"], parts["v"], attention_mask, **kwargs)
    if edits.record is not None:
        edits.record.update({(layer, k): t.detach().clone() for k, t in parts.items()})
        edits.record[(layer, "pattern")] = weights.detach().clone()
    pattern_rows = [(row, head) for row, part, head in todo if part == "pattern"]
    if pattern_rows:
        out = out.clone()                                                # (B, P, H, d)
        groups = parts["q"].shape[1] // parts["v"].shape[1]
        for row, head in pattern_rows:
            w = edits.clean[(layer, "pattern")][0, head].to(parts["v"].dtype)  # (P, P)
            out[row, :, head] = w @ parts["v"][row, head // groups]
    return out, weights


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    if IMPL not in AttentionInterface._global_mapping:
        AttentionInterface.register(IMPL, _attention)
        AttentionMaskInterface.register(IMPL, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


@contextmanager
def attention_edits(lm: LoadedModel, edits: AttnEdits) -> Iterator[AttnEdits]:
    """Route ``lm``'s attention through :func:`_attention` with ``edits`` for the block (hold ``lm.lock``)."""
    _register()
    before = getattr(lm.model.config, "_attn_implementation", None) or "eager"
    lm.model.set_attn_implementation(IMPL)
    _local.edits = edits
    try:
        yield edits
    finally:
        _local.edits = None
        lm.model.set_attn_implementation(before)
