"""The site-name grammar over a loaded model: enumeration, name filters and checks.

Names are TransformerLens's (``hook_embed``, ``blocks.{L}.hook_resid_pre`` ... ``blocks.{L}.attn.hook_z``);
the adapter table (:mod:`neurotrace.lab.model.access.adapters`) resolves each to a module, and
:func:`neurotrace.lab.model.access.hooks.hooked` is the one way to attach hooks to them.

* ``all_sites(lm)`` lists every site in forward order;
* a filter: ``select_sites(["blocks.*.hook_resid_post"], lm)`` matches shell-style globs, or a regular
  expression when a pattern starts with ``re:`` (``"re:blocks\\.[01]\\.hook_mlp_out"``).
"""

import fnmatch
import re
from collections.abc import Sequence

from torch import nn

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.adapters import SITE_HELP
from neurotrace.lab.model.weights.loading import LoadedModel

_PER_LAYER = ("hook_resid_pre", "attn.hook_z", "hook_attn_out", "mlp.hook_post", "hook_mlp_out", "hook_resid_post")


def all_sites(lm: LoadedModel) -> list[str]:
    """Every site name of ``lm`` in forward order (``ln2.hook_normalized``, the MLP's input, where the
    adapter has it)."""
    per_layer = _PER_LAYER if not lm.adapter.mlp else _PER_LAYER[:3] + ("ln2.hook_normalized",) + _PER_LAYER[3:]
    return ["hook_embed"] + [f"blocks.{layer}.{s}" for layer in range(lm.n_layers) for s in per_layer]


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
                             fix=SITE_HELP + ", globs like 'blocks.*.hook_resid_post', or 're:<regex>'")
        chosen.update(hits)
    return [n for n in names if n in chosen]


def check_site(site: str, lm: LoadedModel, field: str = "site") -> str:
    """``site`` if it names a site of ``lm``; InputError(field) otherwise."""
    if site not in all_sites(lm):
        raise InputError(field, f"{site!r} is not a site of this {lm.n_layers}-layer model",
                         fix="use hook_embed or blocks.{L}.<hook> with 0 <= L < n_layers")
    return site


def attn_module(lm: LoadedModel, layer: int, which: int) -> nn.Module:
    """``which=0``: the attention output projection (input = attn.hook_z); ``which=1``: the attention module."""
    return lm.adapter.module(lm.model, lm.adapter.attn_proj if which == 0 else lm.adapter.attn_module, layer)
