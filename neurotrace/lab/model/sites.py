"""Hook sites beyond the adapter table: enumeration, name filters, per-head outputs and attention modules.

The adapters (:mod:`neurotrace.lab.model.adapters`) resolve the six standard sites. Capture and intervention
also need:

* ``blocks.{L}.attn.hook_z`` — every head's output before the attention output projection,
  concatenated (``n_heads * d_head`` wide; TransformerLens's ``hook_z`` flattened). It is hooked as the
  *input* of the output projection (GPT-2 ``attn.c_proj``, Llama ``self_attn.o_proj``, NeoX
  ``attention.dense``, BERT ``attention.output.dense``), so zeroing head ``h`` there removes exactly that
  head's contribution to ``hook_attn_out`` (leaving the projection bias).
* the attention module itself, whose ``attention_mask`` keyword an attention knockout rewrites
  (:mod:`neurotrace.lab.capture.edits`).
* a filter: ``select_sites(["blocks.*.hook_resid_post"], lm)`` matches shell-style globs, or a regular
  expression when a pattern starts with ``re:`` (``"re:blocks\\.[01]\\.hook_mlp_out"``).
"""

import fnmatch
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from torch import nn

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.adapters import SITE_RE
from neurotrace.lab.model.hooks import HookFn, _input_hook, hooked
from neurotrace.lab.model.loading import LoadedModel

HOOK_Z_RE = re.compile(r"^blocks\.(\d+)\.attn\.hook_z$")
_PER_LAYER = ("hook_resid_pre", "attn.hook_z", "hook_attn_out", "mlp.hook_post", "hook_mlp_out", "hook_resid_post")

#: family -> (attention output projection, attention module whose attention_mask a knockout rewrites)
ATTN_PATHS: dict[str, tuple[str, str]] = {
    "gpt2": ("transformer.h.{L}.attn.c_proj", "transformer.h.{L}.attn"),
    "gpt_neox": ("gpt_neox.layers.{L}.attention.dense", "gpt_neox.layers.{L}.attention"),
    "llama": ("model.layers.{L}.self_attn.o_proj", "model.layers.{L}.self_attn"),
    "bert": ("bert.encoder.layer.{L}.attention.output.dense", "bert.encoder.layer.{L}.attention.self"),
    "roberta": ("roberta.encoder.layer.{L}.attention.output.dense", "roberta.encoder.layer.{L}.attention.self"),
    "modernbert": ("model.layers.{L}.attn.Wo", "model.layers.{L}.attn"),
}


def all_sites(lm: LoadedModel) -> list[str]:
    """Every site name of ``lm`` in forward order."""
    return ["hook_embed"] + [f"blocks.{layer}.{s}" for layer in range(lm.n_layers) for s in _PER_LAYER]


def select_sites(patterns: Sequence[str], lm: LoadedModel, field: str = "sites") -> list[str]:
    """Sites matching any pattern (glob, or regex after ``re:``), in forward order."""
    names = all_sites(lm)
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern.startswith("re:"):
            try:
                rx = re.compile(pattern[3:])
            except re.error as exc:
                raise InputError(field, f"bad regular expression {pattern!r}: {exc}",
                                 fix="fix the regex, or use a glob such as 'blocks.*.hook_resid_post'") from exc
            hits = [n for n in names if rx.fullmatch(n)]
        else:
            hits = fnmatch.filter(names, pattern)
        if not hits:
            raise InputError(field, f"pattern {pattern!r} matches no site of this {lm.n_layers}-layer model",
                             fix="use names like hook_embed, blocks.{L}.hook_resid_pre|hook_resid_post|"
                                 "hook_attn_out|hook_mlp_out|mlp.hook_post|attn.hook_z, globs like "
                                 "'blocks.*.hook_resid_post', or 're:<regex>'")
        chosen.update(hits)
    return [n for n in names if n in chosen]


def check_site(site: str, lm: LoadedModel, field: str = "site") -> str:
    """``site`` if it names a site of ``lm``; InputError(field) otherwise."""
    if site not in all_sites(lm):
        raise InputError(field, f"{site!r} is not a site of this {lm.n_layers}-layer model",
                         fix="use hook_embed or blocks.{L}.<hook> with 0 <= L < n_layers")
    return site


def site_layer(site: str) -> int | None:
    m = SITE_RE.match(site) or HOOK_Z_RE.match(site)
    return int(m.group(1)) if m else None


def n_heads(lm: LoadedModel) -> int:
    c = lm.config
    return int(getattr(c, "n_head", None) or c.num_attention_heads)


def attn_module(lm: LoadedModel, layer: int, which: int) -> nn.Module:
    """``which=0``: the attention output projection; ``which=1``: the attention module."""
    paths = ATTN_PATHS.get(lm.adapter.family)
    if paths is None:
        raise InputError("model", f"head-level sites are not mapped for {lm.adapter.family}",
                         fix="use the residual, attn_out or MLP sites")
    return lm.adapter.module(lm.model, paths[which], layer)


@contextmanager
def hooked_sites(lm: LoadedModel, hooks: Mapping[str, HookFn | Sequence[HookFn]]) -> Iterator[None]:
    """Like :func:`neurotrace.lab.model.hooks.hooked`, also accepting ``blocks.{L}.attn.hook_z`` sites."""
    standard = {s: f for s, f in hooks.items() if not HOOK_Z_RE.match(s)}
    handles: list[Any] = []
    try:
        for site, fns in hooks.items():
            m = HOOK_Z_RE.match(site)
            if not m:
                continue
            module = attn_module(lm, int(m.group(1)), 0)
            for fn in (fns if isinstance(fns, Sequence) else [fns]):
                handles.append(module.register_forward_pre_hook(_input_hook(fn, site), with_kwargs=True))
        with ExitStack() as stack:
            stack.enter_context(hooked(lm.model, lm.adapter, standard))
            yield
    finally:
        for h in handles:
            h.remove()
