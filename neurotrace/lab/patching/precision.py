"""How far a bfloat16 patch run agrees with float32, measured on a recomputed sample of its cells.

The metric of the clean and corrupt runs, each kind's ``PEAKS`` most restoring cells (the ones the
summary names) and ``RANDOM`` seeded others are recomputed in float32 with the same target and contrast.
The compared quantity is the metric itself (logit difference, p(target) or KL); the readings are the
summary's most restoring cells, with the float32 values in place of the bfloat16 ones.
"""

from collections.abc import Callable, Sequence

import numpy as np
from torch import Tensor

from neurotrace.lab.model.runtime.precision import Agreement, agreement, changed_readings, choose
from neurotrace.lab.patching.report import grid_cells, ranked, restored
from neurotrace.lab.patching.schema import PatchCell, PatchRequest

PEAKS = 2          # per kind, the most restoring cells, always recomputed
RANDOM = 6         # seeded random cells of the rest, over every kind
SEED = 0
QUANTITY = {"logit_diff": "logit difference", "p_target": "p(target)", "kl": "KL"}

Chosen = list[tuple[str, int]]     # (kind, flat index into the kind's grid)


def choose_cells(grids: dict[str, Tensor], m_clean: float, m_corrupt: float, n_pos: int) -> tuple[Chosen, Chosen]:
    """(peaks, random): each kind's ``PEAKS`` largest |restored| cells (the residual at the scored position
    left out, as in the summary) and ``RANDOM`` seeded others."""
    flat: Chosen = [(k, i) for k, g in grids.items() for i in range(g.numel())]
    peaks: list[int] = []
    offset = 0
    for k, g in grids.items():
        score = restored(g, m_clean, m_corrupt).abs().flatten().clone().nan_to_num(nan=-1.0)
        if k == "resid_pre":
            score.view(g.shape)[:, n_pos - 1] = -1.0
        peaks += [offset + int(i) for i in score.argsort(descending=True)[:PEAKS]]
        offset += g.numel()
    top, rand = choose(len(flat), peaks, RANDOM, SEED)
    return [flat[i] for i in top], [flat[i] for i in rand]


def _label(kind: str, shape: Sequence[int], index: int, tokens: Sequence[str]) -> str:
    at = np.unravel_index(index, tuple(shape))
    if kind == "head_out":
        return f"{kind} L{at[0]} H{at[1]}"
    if kind == "head_out_pos":
        return f"{kind} L{at[0]} H{at[2]} {tokens[at[1]]!r}"
    return f"{kind} L{at[0]} {tokens[at[1]]!r}"


def _top(grids: dict[str, Tensor], m_clean: float, m_corrupt: float, tokens: list[str],
         differing: set[int]) -> list[PatchCell]:
    """The summary's most restoring cells (the report's ranking)."""
    cells = [c for k, g in grids.items() for c in grid_cells(k, g, restored(g, m_clean, m_corrupt), tokens)]
    return ranked(cells, differing)[0]


def _readings(top: list[PatchCell]) -> dict[str, object]:
    name = [f"{c.component} L{c.layer}" + (f"-L{c.through_layer}" if c.through_layer is not None else "")
            + (f" H{c.head}" if c.head is not None else "") + (f" at {c.token!r}" if c.token is not None else "")
            for c in top]
    return {"most restoring cell": name[0] if name else None, "three most restoring": tuple(name[:3])}


def check(request: PatchRequest, grids: dict[str, Tensor], m16: tuple[float, float], tokens: list[str],
          differing: set[int], recompute: Callable[[Chosen], tuple[tuple[float, float], list[float]]]) -> Agreement:
    """The :class:`Agreement` of a bfloat16 patch run's ``grids`` (with clean/corrupt metrics ``m16``):
    ``recompute(cells)`` returns the float32 clean/corrupt metrics and the float32 values of ``cells``."""
    peaks, rand = choose_cells(grids, *m16, len(tokens))
    m32, values = recompute(peaks + rand)
    labels = ["clean run (peak)", "corrupt run (peak)"]
    reduced, reference = [*m16], [*m32]
    patched = {k: g.clone() for k, g in grids.items()}
    for n, ((k, i), v) in enumerate(zip(peaks + rand, values, strict=True)):
        labels.append(_label(k, grids[k].shape, i, tokens) + (" (peak)" if n < len(peaks) else ""))
        reduced.append(float(grids[k].flatten()[i]))
        reference.append(v)
        patched[k].view(-1)[i] = v
    changed = changed_readings(_readings(_top(grids, *m16, tokens, differing)),
                               _readings(_top(patched, *m32, tokens, differing)))
    rerun = "patch with the same request and precision='float32'"
    return agreement(QUANTITY[request.metric], labels, 2 + len(peaks), SEED, reduced, reference, changed, rerun)

