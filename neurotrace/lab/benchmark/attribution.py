"""Attribution methods scored against known ground truth (AUROC), on compiled circuits.

Each method gives one importance per input feature (higher = more important), from ``samples``
inputs at once (every method is vectorised across samples):

* ``correlation`` - |corr(x_i, y)| over the samples;
* ``gradient`` - saliency, mean |dy/dx_i| (torch autograd; checked against the analytic Jacobian);
* ``integrated_gradients`` - mean |(x_i - x'_i) * mean_s dy/dx_i(x' + a_s (x - x'))| with a baseline
  x' (``zeros`` or the data ``mean``) and ``steps`` midpoint steps a_s = (s + 1/2) / steps; all
  steps go through autograd as one batch (chunked to bound memory);
* ``patching`` - activation patching of one input at a time: replace x_i by its value in another
  sample (a seeded permutation of the batch) and take mean |y(patched) - y(x)|;
* ``random`` - seeded uniform scores (the chance baseline).

AUROC is computed from ranks (Mann-Whitney U; tied scores share their average rank, so a tie
between a causal and a non-causal feature counts half). It is the probability that a random causal
feature outranks a random non-causal one: 1.0 = perfect, 0.5 = chance. Scores are reported as mean
+- std over seeds (fresh data, fresh feature order per seed). The ``null`` column scores every
method's importances, from every regime, against scrambled labels (a random feature set of the same
size per seed and regime): every method must fall to about 0.5 there, or the AUROC itself is biased.

Expected dissociation (the benchmark is wrong if it does not hold): correlation fails only on
``confounded``, gradients only on ``suppressor``; integrated gradients and patching recover every
circuit; the random baseline sits near 0.5.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from neurotrace.lab.benchmark.circuits import (
    N_FEATURES,
    REGIMES,
    Circuit,
    Regime,
    build_circuit,
    sample_inputs,
)
from neurotrace.lab.seeding import make_generator

METHODS = ("correlation", "gradient", "integrated_gradients", "patching", "random")
Method = Callable[[Circuit, Tensor, torch.Generator], Tensor]
_CHUNK = 1 << 22                      # elements per autograd batch in integrated gradients


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Rank-based AUROC of ``scores`` for the True ``labels``; ties share their average rank."""
    labels = labels.bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = torch.unique(scores.double(), return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts                    # 0-based rank of each distinct value
    ranks = (first + (counts + 1).double() / 2)[inverse]        # 1-based average ranks
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def autograd_jacobian(circuit: Circuit, x: Tensor) -> Tensor:
    """dy/dx per sample by torch autograd: (samples, features)."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        circuit(xg).sum().backward()
    return xg.grad


def jacobian_check(samples: int, seed: int = 0) -> float:
    """Max |analytic Jacobian - autograd| over every regime's circuit and ``samples`` inputs (float64)."""
    g = make_generator(seed)
    perm = torch.randperm(N_FEATURES, generator=g)
    diffs = []
    for regime in REGIMES:
        circuit = build_circuit(regime, perm)
        x = sample_inputs(regime, samples, g, perm)
        diffs.append(float((circuit.jacobian(x) - autograd_jacobian(circuit, x)).abs().max()))
    return max(diffs)


def correlation(circuit: Circuit, x: Tensor, g: torch.Generator) -> Tensor:
    y = circuit(x)
    xc, yc = x - x.mean(0), y - y.mean()
    denom = xc.norm(dim=0) * yc.norm()
    return ((xc * yc[:, None]).sum(0) / denom.clamp_min(1e-300)).abs()


def gradient(circuit: Circuit, x: Tensor, g: torch.Generator) -> Tensor:
    return autograd_jacobian(circuit, x).abs().mean(0)


def integrated_gradients(circuit: Circuit, x: Tensor, g: torch.Generator, steps: int = 128,
                         baseline: str = "zeros", check: Callable[[], None] | None = None) -> Tensor:
    base = torch.zeros_like(x[:1]) if baseline == "zeros" else x.mean(0, keepdim=True)
    alphas = (torch.arange(steps, dtype=x.dtype) + 0.5) / steps
    per_chunk = max(1, _CHUNK // x.numel())
    total = torch.zeros_like(x)
    for chunk in alphas.split(per_chunk):
        if check is not None:
            check()  # a long path (many samples x steps) stays cancellable
        path = base + chunk[:, None, None] * (x - base)                 # (steps_in_chunk, samples, features)
        total += autograd_jacobian(circuit, path.reshape(-1, x.shape[1])).view_as(path).sum(0)
    return ((x - base) * total / steps).abs().mean(0)


def patching(circuit: Circuit, x: Tensor, g: torch.Generator) -> Tensor:
    n, f = x.shape
    donor = x[torch.randperm(n, generator=g)]
    patched = x.expand(f, n, f).clone()                                 # (patched feature, samples, features)
    idx = torch.arange(f)
    patched[idx, :, idx] = donor.T
    return (circuit(patched) - circuit(x)).abs().mean(1)


def random_scores(circuit: Circuit, x: Tensor, g: torch.Generator) -> Tensor:
    return torch.rand(x.shape[1], generator=g, dtype=torch.float64)


def method_fns(ig_steps: int = 128, ig_baseline: str = "zeros", check: Callable[[], None] | None = None
               ) -> dict[str, Method]:
    return {"correlation": correlation, "gradient": gradient,
            "integrated_gradients": lambda c, x, g: integrated_gradients(c, x, g, ig_steps, ig_baseline, check),
            "patching": patching, "random": random_scores}


def score_circuits(seeds: int, samples: int, ig_steps: int = 128, ig_baseline: str = "zeros", seed: int = 0,
                   regimes: tuple[Regime, ...] = REGIMES, on_seed: Callable[[int], None] | None = None,
                   check: Callable[[], None] | None = None) -> dict[str, dict[str, list[float]]]:
    """AUROC per method and regime, one value per seed; the 'null' lists score every regime's
    importances against scrambled labels (one value per seed and regime). ``check()`` runs before each
    method's scoring (it raises to cancel)."""
    fns = method_fns(ig_steps, ig_baseline, check)
    out: dict[str, dict[str, list[float]]] = {m: {r: [] for r in (*regimes, "null")} for m in fns}
    for s in range(seeds):
        g = make_generator(seed * 7919 + s)
        perm = torch.randperm(N_FEATURES, generator=g)
        for regime in regimes:
            circuit = build_circuit(regime, perm)
            x = sample_inputs(regime, samples, g, perm)
            null = torch.zeros(N_FEATURES, dtype=torch.bool)
            null[torch.randperm(N_FEATURES, generator=g)[:len(circuit.causal)]] = True
            for name, fn in fns.items():
                if check is not None:
                    check()
                scores = fn(circuit, x, g)
                out[name][regime].append(auroc(scores, circuit.labels))
                out[name]["null"].append(auroc(scores, null))
        if on_seed is not None:
            on_seed(s)
    return out
