"""find_neurons in bfloat16: the prompts recomputed in float32, and whether a reading of the summary would change.

The reported quantity is the top-ranked neurons' scores (Cohen's d between the groups), computed from each
prompt's pooled MLP activations; in ``top_examples`` mode it is the one neuron's activation at every position.
The readings of the summary are: the top three neurons in rank order and how many pass Bonferroni and BH at
0.05 (plus, in ``collapse`` mode, which prompts collapsed: they make the groups); in ``top_examples`` mode, the
top example (prompt and position) and the five highest.

Prompts recomputed in float32 with the float32 model:

* the deciding prompts: for each of the top three neurons, the prompt whose activation lies furthest from its
  group's mean (the one that moves that neuron's d most); in ``top_examples`` mode the prompts of the five
  highest examples;
* a seeded random sample of the others: :data:`RECHECK_FRACTION` of the prompts, at least :data:`RECHECK_MIN`.

Differences: the largest |float32 - bfloat16| of a rechecked prompt's activations (every neuron searched), and,
with the float32 activations in place of the bfloat16 ones, the largest change of a top neuron's Cohen's d; the
statistics are recomputed with the same seed, and each reading that changes is named.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from neurotrace.lab.model.access.neurons import neuron_label
from neurotrace.lab.neurons.stats import Contrast, contrast, rank
from neurotrace.lab.seeding import make_generator

RECHECK_FRACTION = 0.1      # of the prompts, beside the deciding ones
RECHECK_MIN = 2             # random prompts rechecked at least (all of them when fewer)
TOP_READ = 3                # neurons the summary names


@dataclass
class PromptsCheck:
    """What the float32 recheck of a bfloat16 find_neurons run found."""

    picked: list[int]                       # prompt indices rechecked in float32
    n_deciding: int
    n_prompts: int
    max_act_diff: float = 0.0               # largest |float32 - bfloat16| activation of a rechecked prompt
    act_scale: float = 0.0                  # largest |float32 activation| of the rechecked prompts
    max_score_diff: float = 0.0             # largest |change| of a top neuron's d (or of the neuron's top value)
    changed: list[str] = field(default_factory=list)


def pick(n: int, must: Sequence[int], seed: int) -> list[int]:
    """``must`` plus a seeded random sample of the other of ``n`` prompts (see the module docstring)."""
    must_set = set(must)
    rest = [i for i in range(n) if i not in must_set]
    k = min(len(rest), max(RECHECK_MIN, math.ceil(RECHECK_FRACTION * n)))
    order = torch.randperm(len(rest), generator=make_generator(seed))[:k].tolist()
    return sorted(must_set | {rest[j] for j in order})


def leverage_prompts(x: Tensor, n_a: int, stats: Contrast, k: int = TOP_READ) -> list[int]:
    """Rows of ``x`` (group A first) furthest from their group's mean, one per top-``k`` neuron."""
    out = []
    for col in rank(stats)[:k].tolist():
        v = x[:, col].double()
        mean = torch.cat([v[:n_a].mean().expand(n_a), v[n_a:].mean().expand(v.numel() - n_a)])
        out.append(int((v - mean).abs().argmax()))
    return out


def ranking_readings(stats: Contrast, layers: Sequence[int], d_mlp: int) -> dict[str, str]:
    top = [neuron_label(layers[c // d_mlp], c % d_mlp) for c in rank(stats)[:TOP_READ].tolist()]
    return {"top neurons": ", ".join(top), "Bonferroni passes": str(int((stats.p_bonferroni < 0.05).sum())),
            "BH passes": str(int((stats.q_bh < 0.05).sum()))}


def compare_ranking(x: Tensor, n_a: int, x32_rows: dict[int, Tensor], stats: Contrast, layers: Sequence[int],
                    d_mlp: int, n_permutations: int, seed: int, top_k: int) -> tuple[float, float, list[str]]:
    """(largest activation difference, largest change of a top-``top_k`` neuron's d, changed readings) with the
    float32 rows ``x32_rows`` (row of ``x`` -> its float32 activations) in place."""
    merged = x.clone()
    act = 0.0
    for row, v in x32_rows.items():
        act = max(act, float((v.float() - x[row].float()).abs().max()))
        merged[row] = v.to(x.dtype)
    again = contrast(merged, n_a, n_permutations, seed)
    cols = rank(stats)[:top_k]
    score = float((again.cohens_d[cols] - stats.cohens_d[cols]).abs().max()) if cols.numel() else 0.0
    before, after = ranking_readings(stats, layers, d_mlp), ranking_readings(again, layers, d_mlp)
    return act, score, [f"{k}: {before[k]} -> {after[k]} in float32" for k in before if before[k] != after[k]]


def example_readings(values: Sequence[Tensor]) -> dict[str, str]:
    flat = sorted(((float(v), p, pos) for p, vec in enumerate(values) for pos, v in enumerate(vec.tolist())),
                  key=lambda t: (-t[0], t[1], t[2]))
    return {"top example": f"prompt {flat[0][1]} position {flat[0][2]}" if flat else "none",
            "top five": ", ".join(f"{p}:{pos}" for _, p, pos in flat[:5])}


def example_prompts(values: Sequence[Tensor], k: int = 5) -> list[int]:
    flat = sorted(((float(v), p) for p, vec in enumerate(values) for v in vec.tolist()), key=lambda t: -t[0])
    return list(dict.fromkeys(p for _, p in flat[:k]))


def compare_examples(values: Sequence[Tensor], again: dict[int, Tensor]) -> tuple[float, float, float, list[str]]:
    """(largest difference, float32 scale, change of the neuron's top value, changed readings) with the float32
    activations ``again`` (prompt -> (pos,)) in place."""
    merged = list(values)
    diff, scale = 0.0, 0.0
    for p, v in again.items():
        diff = max(diff, float((v.float() - values[p].float()).abs().max()))
        scale = max(scale, float(v.float().abs().max()))
        merged[p] = v
    top = abs(float(torch.cat([v.float() for v in merged]).max()) - float(torch.cat([v.float() for v in values]).max()))
    before, after = example_readings(values), example_readings(merged)
    return diff, scale, top, [f"{k}: {before[k]} -> {after[k]} in float32" for k in before if before[k] != after[k]]
