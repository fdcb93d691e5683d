"""The key and value of an edit (ROME section 3.1 / MEMIT section 4.2).

* **Key** ``k*``: the input of layer L's MLP output projection (``blocks.L.mlp.hook_post``) at the last
  subject token, averaged over the bare prompt and prefix contexts (:func:`mean_key`).
* **Value**: a vector ``δ`` added at the last subject token of every rewrite prompt, optimised with Adam so
  the new target wins: ``mean NLL(target_new) + kl_factor * KL(p_orig || p_edit on '{subject} is a') +
  weight_decay * |δ| / |v0|^2``, with ``|δ| <= clamp_norm * |v0|`` after each step (ROME's clamp) and an
  early stop when the NLL falls under 0.05. ``v0`` is the unedited vector where ``δ`` is added: the
  projection's output for ROME (space ``'mlp'``; so ``v* = W k* + b + δ``), the residual stream after the
  last layer of the range for MEMIT (space ``'resid'``; ``z = h + δ``).

The projection's output has no site name on models that normalise the MLP's output before the residual
add (Gemma 2/3), so :func:`adding` hooks the projection module itself; the hook lives only in the block.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from neurotrace.lab.editing.counterfact.text import Batch, logits_at_last, pad, subject_position
from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.hooks import hooked, recording
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter

Space = Literal["mlp", "resid"]
KL_TEMPLATES = ("{} is a",)
EARLY_STOP_NLL = 0.05


@dataclass
class ValueSettings:
    steps: int
    lr: float
    kl_factor: float
    weight_decay: float
    clamp_norm: float


def key_site(layer: int) -> str:
    return site_name("mlp_post", layer)


def down_proj(lm: LoadedModel, layer: int) -> torch.nn.Module:
    return lm.adapter.module(lm.model, lm.adapter.mlp_down, layer)


@torch.no_grad()
def mean_key(lm: LoadedModel, layer: int, b: Batch) -> Tensor:
    """(d_mlp,) the projection's input at the last subject token, averaged over the rows."""
    site = key_site(layer)
    with recording(lm.model, lm.adapter, [site]) as store:
        lm.model(input_ids=b.ids, attention_mask=b.mask)
    act = store[site]
    return act[torch.arange(len(b.subject)), b.subject.to(act.device)].float().mean(0).cpu()


@torch.no_grad()
def resid_at_subject(lm: LoadedModel, layer: int, b: Batch) -> Tensor:
    """(d_model,) the residual stream after ``layer`` at the last subject token, averaged over the rows."""
    site = site_name("resid_post", layer)
    with recording(lm.model, lm.adapter, [site]) as store:
        lm.model(input_ids=b.ids, attention_mask=b.mask)
    act = store[site]
    return act[torch.arange(len(b.subject)), b.subject.to(act.device)].float().mean(0).cpu()


@contextmanager
def adding(lm: LoadedModel, layer: int, space: Space, delta: Tensor, subject: Tensor,
           store: dict[str, Tensor] | None = None) -> Iterator[None]:
    """Add ``delta`` at each row's subject position of layer ``layer``'s projection output ('mlp') or
    residual output ('resid'); the unedited value at row 0 goes into ``store['v0']``."""
    rows = torch.arange(len(subject))

    def add(act: Tensor, **_: object) -> Tensor:
        if store is not None:
            store["v0"] = act[0, int(subject[0])].detach().float().clone()
        out = act.clone()
        out[rows, subject.to(act.device)] = out[rows, subject.to(act.device)] + delta.to(act.dtype)
        return out

    if space == "resid":
        with hooked(lm.model, lm.adapter, {site_name("resid_post", layer): add}):
            yield
        return
    handle = down_proj(lm, layer).register_forward_hook(lambda _m, _a, out: add(out))
    try:
        yield
    finally:
        handle.remove()


def rewrite_batch(lm: LoadedModel, template: str, subject: str, prefixes: list[str], field: str
                  ) -> tuple[Batch, int]:
    """The rewrite prompts (each prefix + template) and after them the KL prompts; returns the batch and
    how many rewrite rows lead it."""
    rows, subj = [], []
    for tmpl, prefs in ((template, prefixes), *((k, [""]) for k in KL_TEMPLATES)):
        for prefix in prefs:
            start = len(prefix) + tmpl.index("{}")
            ids, pos = subject_position(lm, prefix + tmpl.format(subject), start, start + len(subject), field)
            rows.append(ids)
            subj.append(pos)
    return pad(lm, rows, subj), len(prefixes)


def optimise_value(lm: LoadedModel, layer: int, space: Space, b: Batch, n_rewrite: int, target: int,
                   settings: ValueSettings, reporter: Reporter) -> tuple[Tensor, Tensor, float]:
    """(δ, v0, final NLL): the vector that makes ``target`` win at ``layer`` (see the module docstring)."""
    probe: dict[str, Tensor] = {}
    with torch.no_grad(), adding(lm, layer, space, torch.zeros(()), b.subject, probe):
        base = torch.log_softmax(logits_at_last(lm, b)[n_rewrite:].float(), dim=-1)    # (kl rows, vocab)
    v0 = probe["v0"]
    delta = torch.zeros_like(v0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=settings.lr)
    max_norm = settings.clamp_norm * float(v0.norm())
    nll_value = float("inf")
    for step in range(settings.steps):
        reporter.check()
        with torch.enable_grad(), adding(lm, layer, space, delta.to(lm.device), b.subject):
            logp = torch.log_softmax(logits_at_last(lm, b).float(), dim=-1)              # (rows, vocab)
            nll = -logp[:n_rewrite, target].mean()
            kl = torch.nn.functional.kl_div(logp[n_rewrite:], base, log_target=True, reduction="batchmean")
            loss = nll + settings.kl_factor * kl + settings.weight_decay * delta.norm() / v0.norm() ** 2
            nll_value = float(nll.detach())
            if nll_value < EARLY_STOP_NLL:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            if float(delta.norm()) > max_norm:
                delta.mul_(max_norm / float(delta.norm()))
        reporter.step(step + 1, settings.steps, f"value step {step + 1}: nll {nll_value:.3f}")
    return delta.detach().cpu(), v0.cpu(), nll_value
