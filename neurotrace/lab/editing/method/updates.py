"""Computing and applying the updates: ROME at one layer per fact, MEMIT over a range for many facts.

* :func:`rome_update` - the value ``δ`` is optimised at the projection's output of layer L
  (:mod:`~neurotrace.lab.editing.method.vectors`), the key ``k*`` averaged over the prefix contexts, and
  ``v* = W k* + b + δ``; the update is ROME's closed form (:func:`~neurotrace.lab.editing.method.rome.rome_delta`).
* :func:`memit_updates` - each fact's target ``z_i = h_i + δ_i`` is optimised on the residual stream after
  the last layer L of the range; then layer by layer, lowest first, with the earlier layers' updates
  already in the weights: ``R = (z - h) / (layers left)`` (h read again each time), keys ``K`` of every fact
  at that layer, and MEMIT's batch update (:func:`~neurotrace.lab.editing.method.rome.memit_delta`). On models that
  normalise the MLP output before the residual add (Gemma 2/3) the residual ``R`` is asked of the
  projection's output as it is, so the spread is approximate there; re-reading ``h`` per layer corrects
  part of it.

The weights of the shared cached model are changed in place only inside :func:`preserved`, which puts the
original tensors back on exit (copied, not subtracted, so nothing drifts).
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from neurotrace.lab.editing.counterfact.cases import Case
from neurotrace.lab.editing.counterfact.measure import CaseIds
from neurotrace.lab.editing.counterfact.text import batch
from neurotrace.lab.editing.method.rome import memit_delta, native_delta, rome_delta, weight_matrix
from neurotrace.lab.editing.method.vectors import (
    ValueSettings,
    down_proj,
    mean_key,
    optimise_value,
    resid_at_subject,
    rewrite_batch,
)
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter


@dataclass
class Update:
    layer: int
    delta: Tensor          # (d_out, d_in) float32
    value_norm: float      # |v* - W k*| (ROME) or mean |z - h| (MEMIT)
    nll: float             # the value optimisation's final NLL of the new target
    key: Tensor | None = None      # ROME: k* (d_in,)
    value: Tensor | None = None    # ROME: v* = W k* + b + δ (d_out,)


def param_name(lm: LoadedModel, layer: int) -> str:
    return lm.adapter.mlp_down.replace("{L}", str(layer)) + ".weight"


@contextmanager
def preserved(lm: LoadedModel, layers: Sequence[int]) -> Iterator[None]:
    """Inside the block the projections of ``layers`` may be edited; their weights are restored on exit."""
    saved = {layer: down_proj(lm, layer).weight.detach().clone() for layer in set(layers)}
    try:
        yield
    finally:
        with torch.no_grad():
            for layer, w in saved.items():
                down_proj(lm, layer).weight.copy_(w)


@torch.no_grad()
def apply(lm: LoadedModel, update: Update) -> None:
    mod = down_proj(lm, update.layer)
    mod.weight += native_delta(mod, update.delta).to(mod.weight.device, mod.weight.dtype)


def rome_update(lm: LoadedModel, case: Case, ids: CaseIds, layer: int, prefixes: list[str], cov: Tensor,
                settings: ValueSettings, field: str, reporter: Reporter) -> Update:
    """ROME's rank-one update of layer ``layer`` for one case."""
    b, n_rewrite = rewrite_batch(lm, case.template, case.subject, prefixes, field)
    delta, _v0, nll = optimise_value(lm, layer, "mlp", b, n_rewrite, ids.new, settings, reporter)
    k = mean_key(lm, layer, batch(lm, [case.template], case.subject, prefixes, field))
    mod = down_proj(lm, layer)
    with torch.no_grad():
        current = mod(k[None].to(mod.weight.device, mod.weight.dtype))[0].float().cpu()   # W k* + b
        dw = rome_delta(weight_matrix(mod).detach().float().cpu(), cov, k, current + delta, current)
    return Update(layer=layer, delta=dw.float(), value_norm=float(delta.norm()), nll=nll, key=k,
                  value=current + delta)


def memit_updates(lm: LoadedModel, cases: Sequence[Case], ids: Sequence[CaseIds], layers: Sequence[int],
                  prefixes: list[str], covs: dict[int, Tensor], settings: ValueSettings, lam: float,
                  fields: Sequence[str], reporter: Reporter) -> list[Update]:
    """MEMIT's updates over ``layers`` for all cases together, applied to the weights as they are made
    (call inside :func:`preserved`)."""
    top = max(layers)
    targets, bares, nlls = [], [], []
    for case, case_ids, field in zip(cases, ids, fields, strict=True):
        b, n_rewrite = rewrite_batch(lm, case.template, case.subject, prefixes, field)
        delta, v0, nll = optimise_value(lm, top, "resid", b, n_rewrite, case_ids.new, settings, reporter)
        targets.append(v0 + delta)
        nlls.append(nll)
        bares.append(batch(lm, [case.template], case.subject, [""], field))
    z = torch.stack(targets)                                                            # (n, d_model)
    updates = []
    for i, layer in enumerate(sorted(layers)):
        reporter.check()
        h = torch.stack([resid_at_subject(lm, top, b) for b in bares])                  # (n, d_model)
        keys = torch.stack([mean_key(lm, layer, batch(lm, [c.template], c.subject, prefixes, f))
                            for c, f in zip(cases, fields, strict=True)])                # (n, d_mlp)
        resid = (z - h).T / (len(layers) - i)                                           # (d_model, n)
        update = Update(layer=layer, delta=memit_delta(covs[layer], keys.T, resid, lam).float(),
                        value_norm=float((z - h).norm(dim=1).mean()), nll=max(nlls))
        apply(lm, update)
        updates.append(update)
    return updates
