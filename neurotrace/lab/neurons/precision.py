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
from typing import Any

import torch
from torch import Tensor

from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.neurons import neuron_label
from neurotrace.lab.model.runtime.pooling import collect
from neurotrace.lab.model.runtime.precision import Agreement, agreement, changed_readings, choose
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.neurons.collapse import generate_and_record
from neurotrace.lab.neurons.stats import Contrast, contrast, rank
from neurotrace.lab.progress import NULL_REPORTER

RECHECK_FRACTION = 0.1      # of the prompts, beside the deciding ones
RECHECK_MIN = 2             # random prompts rechecked at least (all of them when fewer)
TOP_READ = 3                # neurons the summary names


def pick(n: int, must: Sequence[int], seed: int) -> tuple[list[int], int]:
    """(prompts to recheck, deciding ones first; how many are deciding) of ``n`` (see the module docstring)."""
    peaks, rand = choose(n, must, max(RECHECK_MIN, math.ceil(RECHECK_FRACTION * n)), seed)
    return peaks + rand, len(peaks)


def recheck_bound(n_prompts: int, mode: str) -> int:
    """At most how many prompts the recheck recomputes (the cost model's count)."""
    deciding = 5 if mode == "top_examples" else TOP_READ
    return min(n_prompts, deciding + max(RECHECK_MIN, math.ceil(RECHECK_FRACTION * n_prompts)))


def to_agreement(quantity: str, labels: list[str], n_deciding: int, seed: int, diffs: list[float],
                 changed: list[str], rerun: str, detail: str) -> Agreement:
    """The shared :class:`Agreement` (per recomputed prompt: its largest |difference|) with ``detail``
    (what the differences do to the scores) in its summary."""
    out = agreement(quantity, labels, n_deciding, seed, diffs, [0.0] * len(diffs), changed, rerun)
    out.summary = f"{out.summary[:-1]} ({detail})."
    return out


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
                    d_mlp: int, n_permutations: int, seed: int, top_k: int
                    ) -> tuple[dict[int, float], float, float, list[str]]:
    """With the float32 rows ``x32_rows`` (row of ``x`` -> its float32 activations) in place: (row -> its largest
    |activation difference|, the largest |float32 activation|, the largest change of a top-``top_k`` neuron's
    d, the readings that change)."""
    merged = x.clone()
    diffs, scale = {}, 0.0
    for row, v in x32_rows.items():
        diffs[row] = float((v.float() - x[row].float()).abs().max())
        scale = max(scale, float(v.float().abs().max()))
        merged[row] = v.to(x.dtype)
    again = contrast(merged, n_a, n_permutations, seed)
    cols = rank(stats)[:top_k]
    score = float((again.cohens_d[cols] - stats.cohens_d[cols]).abs().max()) if cols.numel() else 0.0
    return diffs, scale, score, changed_readings(ranking_readings(stats, layers, d_mlp),
                                                 ranking_readings(again, layers, d_mlp))


def example_readings(values: Sequence[Tensor]) -> dict[str, str]:
    flat = sorted(((float(v), p, pos) for p, vec in enumerate(values) for pos, v in enumerate(vec.tolist())),
                  key=lambda t: (-t[0], t[1], t[2]))
    return {"top example": f"prompt {flat[0][1]} position {flat[0][2]}" if flat else "none",
            "top five": ", ".join(f"{p}:{pos}" for _, p, pos in flat[:5])}


def example_prompts(values: Sequence[Tensor], k: int = 5) -> list[int]:
    flat = sorted(((float(v), p) for p, vec in enumerate(values) for v in vec.tolist()), key=lambda t: -t[0])
    return list(dict.fromkeys(p for _, p in flat[:k]))


def compare_examples(values: Sequence[Tensor], again: dict[int, Tensor]
                     ) -> tuple[dict[int, float], float, float, list[str]]:
    """With the float32 activations ``again`` (prompt -> (pos,)) in place: (prompt -> its largest |difference|,
    the largest |float32 activation|, the change of the neuron's top value, the readings that change)."""
    merged = list(values)
    diffs, scale = {}, 0.0
    for p, v in again.items():
        diffs[p] = float((v.float() - values[p].float()).abs().max())
        scale = max(scale, float(v.float().abs().max()))
        merged[p] = v
    top = abs(float(torch.cat([v.float() for v in merged]).max()) - float(torch.cat([v.float() for v in values]).max()))
    return diffs, scale, top, changed_readings(example_readings(values), example_readings(merged))


RERUN = "find_neurons with the same request and precision='float32'"


def recheck_ranking(lm32: LoadedModel, request: Any, layers: list[int], ids: list[list[int]], order: list[int],
                    x: Tensor, n_a: int, stats: Contrast, reasons: list[list[str]] | None) -> Agreement:
    """Recompute the deciding and sampled prompts in float32 (``order``: row of ``x`` -> prompt in ``ids``;
    ``reasons``: collapse mode's bfloat16 collapse reasons per prompt) and compare."""
    rows, n_deciding = pick(x.shape[0], leverage_prompts(x, n_a, stats), request.seed)
    prompts = [order[r] for r in rows]
    sub = [ids[p] for p in prompts]
    flips: list[str] = []
    if reasons is None:
        sites = [site_name("mlp_post", layer) for layer in layers]
        acts = collect(lm32, sub, sites, request.position, batch_size=32)
        x32 = torch.cat([acts[s] for s in sites], 1)
    else:
        gen = generate_and_record(lm32, sub, layers, max_new_tokens=request.max_new_tokens, window=request.window,
                                  thresholds=request.thresholds, batch_size=32, reporter=NULL_REPORTER)
        x32 = torch.cat([gen.acts[layer] for layer in layers], 1)
        flips = [f"prompt {p} collapsed: {bool(reasons[p])} -> {bool(r)}" for p, r in zip(prompts, gen.reasons,
                                                                                        strict=True)
                 if bool(reasons[p]) != bool(r)]
    diffs, scale, score, changed = compare_ranking(x, n_a, dict(zip(rows, x32, strict=True)), stats, layers,
                                                   lm32.d_mlp, request.n_permutations, request.seed, request.top_k)
    detail = (f"{len(rows)} of {x.shape[0]} prompts recomputed; largest float32 activation {scale:.3g}; top-"
              f"{request.top_k} neurons' Cohen's d moves by at most {score:.2g} with them in place")
    return to_agreement("pooled MLP activation", [f"prompt {p}" for p in prompts], n_deciding, request.seed,
                        [diffs[r] for r in rows], flips + changed, RERUN, detail)


def recheck_examples(lm32: LoadedModel, request: Any, ids: list[list[int]], site: str, index: int,
                     values: list[Tensor]) -> Agreement:
    """top_examples: recompute the prompts of the five highest examples and a seeded sample in float32."""
    picked, n_deciding = pick(len(ids), example_prompts(values), request.seed)
    acts = collect(lm32, [ids[p] for p in picked], [site], "all", batch_size=32)[site]
    diffs, scale, top, changed = compare_examples(values, {p: a[:, index] for p, a in zip(picked, acts, strict=True)})
    detail = (f"{len(picked)} of {len(ids)} prompts recomputed; largest float32 activation {scale:.3g}; the "
              f"neuron's top value moves by {top:.2g}")
    return to_agreement("neuron activation", [f"prompt {p}" for p in picked], n_deciding, request.seed,
                        [diffs[p] for p in picked], changed, RERUN, detail)
