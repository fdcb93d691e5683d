"""The one neuron reference: ``"L:i"`` = hidden unit ``i`` of ``blocks.{L}.mlp.hook_post``.

Every tool that names MLP neurons (clamp_sweep, find_neurons, intervene's ``set_neurons``, capture's
edits) writes them this way; ``"*:i"`` means index ``i`` in every layer. :func:`parse_neuron` checks
the reference against the model and returns ``{layer: (index, ...)}``; :func:`parse_neurons` merges
a list of references.
"""

import re
from collections.abc import Sequence

from neurotrace.lab.errors import InputError

NEURON_RE = re.compile(r"^\s*(\*|\d+)\s*:\s*(\d+)\s*$")
NEURON_HELP = ("MLP neurons as 'layer:index' of blocks.{layer}.mlp.hook_post (0 <= index < d_mlp), "
               "e.g. '11:373'; '*:373' = index 373 in every layer.")


def parse_neuron(ref: str, n_layers: int, d_mlp: int, field: str = "neurons") -> dict[int, tuple[int, ...]]:
    """'11:373' -> {11: (373,)}; '*:373' -> {L: (373,) for every layer}; InputError(field) if bad."""
    m = NEURON_RE.match(ref)
    if not m:
        raise InputError(field, f"{ref!r} is not 'layer:index'", fix="write e.g. '11:373' or '*:373'")
    index = int(m.group(2))
    if index >= d_mlp:
        raise InputError(field, f"index {index} in {ref!r} is out of range: the MLP is {d_mlp} wide",
                         fix=f"use an index in 0..{d_mlp - 1}")
    if m.group(1) == "*":
        return {layer: (index,) for layer in range(n_layers)}
    layer = int(m.group(1))
    if layer >= n_layers:
        raise InputError(field, f"layer {layer} in {ref!r} is out of range ({n_layers} layers)",
                         fix=f"use a layer in 0..{n_layers - 1} or '*' for all")
    return {layer: (index,)}


def merge_neurons(parts: Sequence[dict[int, tuple[int, ...]]]) -> dict[int, tuple[int, ...]]:
    """Union of parsed references, layers and indices sorted."""
    out: dict[int, set[int]] = {}
    for part in parts:
        for layer, idx in part.items():
            out.setdefault(layer, set()).update(idx)
    return {layer: tuple(sorted(idx)) for layer, idx in sorted(out.items())}


def parse_neurons(refs: Sequence[str], n_layers: int, d_mlp: int,
                  field: str = "neurons") -> dict[int, tuple[int, ...]]:
    """Several references merged into {layer: indices}."""
    return merge_neurons([parse_neuron(r, n_layers, d_mlp, field) for r in refs])


def neuron_label(layer: int, index: int) -> str:
    return f"{layer}:{index}"
