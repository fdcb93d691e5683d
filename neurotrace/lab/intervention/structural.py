"""Controls that match the structure edited: the same edit on other heads, neurons, features or positions.

A random direction of the same norm answers "is it the size of the push?"; it does not answer "is it *these*
heads?". Zeroing any two heads of a late layer may cut the logit difference, or none may; only the same edit on
other units of the same kind says whether the chosen ones are special. Each family replaces every policy by its
counterpart (a policy without one rules the family out, so a control never keeps part of the real edit):

* ``same-layer heads``: ``zero_heads`` on as many other heads of the same layer;
* ``heads of any layer``: as many heads of a random layer (never the exact heads edited);
* ``same-layer neurons``: ``set_neurons`` on as many other neurons of each layer, to the same value;
* ``matched-mass features``: an SAE feature edit on other features whose summed activation over the prompt is
  the nearest to each edited feature's (drawn from the :data:`MASS_POOL` nearest, per prompt);
* ``other positions``: an edit with explicit ``positions`` at as many other positions of the prompt.

Draws come from a generator seeded by ``seed`` and the control's index, so control ``k`` edits the same heads
or neurons on every prompt. The verdict (:mod:`neurotrace.lab.intervention.controls`) compares against the
first family present in :data:`FAMILY_ORDER`; the random directions stay as one more control.
"""

from collections.abc import Callable
from typing import Any

import torch

from neurotrace.lab.capture import HeadAblation, SetNeurons
from neurotrace.lab.model.access.neurons import parse_neurons
from neurotrace.lab.seeding import make_generator

SAME_HEADS, ANY_HEADS, NEURONS, FEATURES, POSITIONS = ("same-layer heads", "heads of any layer",
                                                       "same-layer neurons", "matched-mass features",
                                                       "other positions")
RANDOM = "random directions"
FAMILY_ORDER = (SAME_HEADS, NEURONS, FEATURES, POSITIONS, ANY_HEADS, RANDOM)
MASS_POOL = 8


def _pick(pool: list[int], k: int, g: torch.Generator) -> list[int] | None:
    if len(pool) < k or k == 0:
        return None
    order = torch.randperm(len(pool), generator=g).tolist()
    return sorted(pool[i] for i in order[:k])


def _same_heads(p: Any, n_heads: int, g: torch.Generator) -> Any:
    heads = _pick([h for h in range(n_heads) if h not in p.heads], len(p.heads), g)
    return None if heads is None else p.model_copy(update={"heads": heads})


def _any_heads(p: Any, n_layers: int, n_heads: int, g: torch.Generator) -> Any:
    for _ in range(8):
        layer = int(torch.randint(n_layers, (1,), generator=g))
        heads = _pick(list(range(n_heads)), len(p.heads), g)
        if heads is not None and (layer, heads) != (p.layer, sorted(p.heads)):
            return p.model_copy(update={"layer": layer, "heads": heads})
    return None


def _neurons(p: Any, n_layers: int, d_mlp: int, g: torch.Generator) -> Any:
    refs = []
    for layer, idx in sorted(parse_neurons(p.neurons, n_layers, d_mlp, field="policies").items()):
        other = _pick([i for i in range(d_mlp) if i not in set(idx)], len(idx), g)
        if other is None:
            return None
        refs += [f"{layer}:{i}" for i in other]
    return p.model_copy(update={"neurons": refs})


def _positions(p: Any, prompt_len: int, g: torch.Generator) -> Any:
    pos = getattr(p, "positions", None)
    if pos is None:
        return None
    used = {q if q >= 0 else prompt_len + q for q in pos}
    other = _pick([q for q in range(prompt_len) if q not in used], len(used), g)
    return None if other is None else p.model_copy(update={"positions": other})


def _features(p: Any, mass: torch.Tensor | None, g: torch.Generator) -> Any:
    """Each edited feature swapped for one of the MASS_POOL features nearest in summed activation."""
    if mass is None:
        return None
    taken = set(p.features)
    out = []
    for f in p.features:
        gap = (mass - mass[f]).abs()
        gap[list(taken)] = float("inf")
        pool = [int(i) for i in gap.topk(min(MASS_POOL, len(gap)), largest=False).indices if gap[i] < float("inf")]
        pick = _pick(pool, 1, g)
        if pick is None:
            return None
        taken.add(pick[0])
        out.append(pick[0])
    return p.model_copy(update={"features": sorted(out)})


def control_sets(policies: list[Any], *, n: int, seed: int, n_layers: int, n_heads: int, d_mlp: int,
                 prompt_len: int, feature_mass: torch.Tensor | None,
                 is_feature: Callable[[Any], bool]) -> dict[str, list[list[Any]]]:
    """{family: [control policy list] * n} for every family that covers all ``policies`` (see the docstring)."""
    makers: dict[str, Callable[[Any, torch.Generator], Any]] = {
        SAME_HEADS: lambda p, g: _same_heads(p, n_heads, g) if isinstance(p, HeadAblation) else None,
        ANY_HEADS: lambda p, g: _any_heads(p, n_layers, n_heads, g) if isinstance(p, HeadAblation) else None,
        NEURONS: lambda p, g: _neurons(p, n_layers, d_mlp, g) if isinstance(p, SetNeurons) else None,
        FEATURES: lambda p, g: _features(p, feature_mass, g) if is_feature(p) else None,
        POSITIONS: lambda p, g: _positions(p, prompt_len, g),
    }
    out: dict[str, list[list[Any]]] = {}
    for i, (family, make) in enumerate(makers.items()):
        sets = []
        for k in range(n):
            g = make_generator(seed * 1_000_003 + 7919 * k + i)
            ctrl = [make(p, g) for p in policies]
            if any(c is None for c in ctrl):
                break
            sets.append(ctrl)
        if sets and len(sets) == n:
            out[family] = sets
    return out
