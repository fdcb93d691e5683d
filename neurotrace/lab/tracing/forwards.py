"""Batched patched forwards: p(target) per row with hooks attached, and a clean prompt's states.

:func:`target_probs` runs a batch of rows through the model body with hooks attached and applies the
LM head at the scored position only, returning p(target) per row. Rows are independent, so many
patched runs share one forward; this is exact (no approximation), and it avoids computing logits for
every position.
"""

from collections.abc import Callable, Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.runtime.nnsight_backend import traced, traced_clean, traced_probs
from neurotrace.lab.model.weights.loading import LoadedModel

COMPONENT_SITE = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}

HookMap = Mapping[str, Callable[..., Tensor | None] | Sequence[Callable[..., Tensor | None]]]


def compute_dtype(lm: LoadedModel) -> torch.dtype:
    """The dtype ``lm``'s products run in: its attention output projection's weight (norms may differ)."""
    return lm.adapter.module(lm.model, lm.adapter.attn_proj, 0).weight.dtype


@torch.no_grad()
def target_probs(lm: LoadedModel, ids: Int[Tensor, "batch pos"], predict_pos: int, target_id: int,
                 hooks: HookMap | None = None) -> Float[Tensor, " batch"]:
    """p(target) at ``predict_pos`` for each row of ``ids`` (batch, pos), with ``hooks`` attached."""
    if traced(lm):  # backend='nnsight': the same hooks, realised in nnsight's trace
        return traced_probs(lm, ids, predict_pos, target_id, hooks)
    body = lm.adapter.module(lm.model, lm.adapter.base)
    with hooked(lm.model, lm.adapter, hooks or {}):
        hidden = body(input_ids=ids.to(lm.device)).last_hidden_state       # (batch, pos, d_model)
    logits = lm.adapter.logits_at(lm.model, hidden[:, predict_pos])         # (batch, d_vocab)
    return torch.softmax(logits.float(), dim=-1)[:, target_id]


@torch.no_grad()
def clean_states(lm: LoadedModel, ids: Int[Tensor, " pos"], sites: Sequence[str]
                 ) -> tuple[dict[str, Float[Tensor, "pos ..."]], Float[Tensor, "pos d_model"]]:
    """Activations at ``sites`` for one clean prompt (pos, width) and the final hidden states."""
    if traced(lm):  # backend='nnsight': read in nnsight's trace
        return traced_clean(lm, ids, sites)
    store: dict[str, Tensor] = {}

    def save(act: Tensor, site: str) -> None:
        store[site] = act[0].detach().clone()

    body = lm.adapter.module(lm.model, lm.adapter.base)
    with hooked(lm.model, lm.adapter, {s: save for s in sites}):
        hidden = body(input_ids=ids[None].to(lm.device)).last_hidden_state
    return store, hidden[0]


def sites_for(component: str, layer: int, window: int, n_layers: int) -> list[str]:
    """The sites restored for one grid cell: resid at ``layer``; mlp/attn over a window around it."""
    if component == "resid":
        return [site_name("resid_post", layer)]
    lo, hi = max(0, layer - window // 2), min(n_layers, layer - (-window // 2))
    return [site_name(COMPONENT_SITE[component], layer_) for layer_ in range(lo, hi)]
