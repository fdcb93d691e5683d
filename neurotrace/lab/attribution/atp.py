"""Attribution patching (Nanda 2023; Syed et al. 2023) over heads and MLP neurons, with exact checks.

Patching a component's clean activation into the corrupt run changes the metric by about
``(a_clean - a_corrupt) . dm/da`` (first order, gradient taken on the corrupt run). A head is its slice
of ``hook_z`` at every position, a neuron its ``mlp.hook_post`` unit at every position; one forward and
one backward on the corrupt prompt give every estimate. The ``check_top`` largest are then patched
exactly, one forward each, so the reader sees how far the linear estimate can be trusted.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.weights.loading import LoadedModel

MetricFn = Callable[[Tensor], Tensor]      # logits at the scored position (vocab,) -> scalar


def _sites(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)] + \
        [site_name("mlp_post", layer) for layer in range(n_layers)]


@torch.no_grad()
def clean_acts(lm: LoadedModel, ids: Tensor) -> dict[str, Tensor]:
    store: dict[str, Tensor] = {}

    def save(act: Tensor, site: str) -> None:
        store[site] = act[0].detach().clone()

    with hooked(lm.model, lm.adapter, {s: save for s in _sites(lm.n_layers)}):
        lm.model(input_ids=ids[None].to(lm.device))
    return store


def gradients(lm: LoadedModel, ids: Tensor, metric: MetricFn) -> tuple[float, dict[str, Tensor], dict[str, Tensor]]:
    """(metric, activations, d metric / d activation) on the corrupt prompt ``ids``, per site (pos, width)."""
    acts: dict[str, Tensor] = {}

    def leaf(act: Tensor, site: str) -> Tensor:
        acts[site] = act.detach().requires_grad_(True)
        return acts[site]

    with torch.enable_grad(), hooked(lm.model, lm.adapter, {s: leaf for s in _sites(lm.n_layers)}):
        m = metric(lm.model(input_ids=ids[None].to(lm.device)).logits[0, -1].float())
        m.backward()
    return float(m.detach()), {s: a.detach()[0] for s, a in acts.items()}, {s: a.grad[0] for s, a in acts.items()}


def estimates(lm: LoadedModel, clean: dict[str, Tensor], corrupt: dict[str, Tensor],
              grads: dict[str, Tensor], n_heads: int) -> tuple[Tensor, Tensor]:
    """(heads (layers, heads), neurons (layers, d_mlp)) first-order estimates of patching corrupt -> clean."""
    heads, neurons = [], []
    for layer in range(lm.n_layers):
        z = f"blocks.{layer}.attn.hook_z"
        heads.append(((clean[z] - corrupt[z]) * grads[z]).sum(0).view(n_heads, -1).sum(-1))
        p = site_name("mlp_post", layer)
        neurons.append(((clean[p] - corrupt[p]) * grads[p]).sum(0))
    return torch.stack(heads).float(), torch.stack(neurons).float()


@torch.no_grad()
def exact_patch(lm: LoadedModel, ids: Tensor, metric: MetricFn, site: str, cols: slice,
                clean: dict[str, Tensor]) -> float:
    """The metric of the corrupt run with ``clean[site][:, cols]`` written in at every position."""
    def put(act: Tensor, site: str) -> Tensor:
        act = act.clone()
        act[0, :, cols] = clean[site][:, cols]
        return act

    with hooked(lm.model, lm.adapter, {site: put}):
        return float(metric(lm.model(input_ids=ids[None].to(lm.device)).logits[0, -1].float()))
