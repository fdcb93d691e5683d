"""Attribution methods scored against known ground truth (AUROC), on compiled circuits.

Methods (importance per input feature, higher = more important):

* ``correlation`` - |corr(x_i, y)| over the samples;
* ``gradient`` - mean |dy/dx_i| (saliency);
* ``integrated_gradients`` - mean |(x_i - x'_i) * avg_a dy/dx_i(x' + a (x - x'))| with a baseline x'
  (zeros or the data mean) and ``steps`` midpoint steps;
* ``patching`` - mean |y(x with x_i taken from another sample) - y(x)| (activation patching of one
  input at a time);
* ``random`` - seeded uniform scores (the chance baseline).

AUROC (Mann-Whitney, ties counted half) of importances vs the causal labels, mean +- std over seeds.
A scrambled-label null (labels drawn at random per seed) must put every method near 0.5. Expected
dissociation: correlation fails only on ``confounded``, gradients only on ``suppressor``; integrated
gradients and patching recover every circuit.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from neurotrace.lab.circuits import REGIMES, Circuit, Regime, build_circuit, sample_inputs
from neurotrace.lab.seeding import make_generator

METHODS = ("correlation", "gradient", "integrated_gradients", "patching", "random")


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count half."""
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).double().sum()
    ties = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def autograd_jacobian(circuit: Circuit, x: Tensor) -> Tensor:
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        circuit(xg).sum().backward()
    return xg.grad


def correlation(circuit: Circuit, x: Tensor, g: torch.Generator) -> Tensor:
    y = circuit(x)
    xc, yc = x - x.mean(0), y - y.mean()
    denom = xc.norm(dim=0) * yc.norm()
    return ((xc * yc[:, None]).sum(0) / denom.clamp_min(1e-300)).abs()


def gradient(circuit: Circuit, x: Tensor, g: torch.Generator) -> Tensor:
    return autograd_jacobian(circuit, x).abs().mean(0)


def integrated_gradients(circuit: Circuit, x: Tensor, g: torch.Generator, steps: int = 128,
                         baseline: str = "zeros") -> Tensor:
    base = torch.zeros_like(x[:1]) if baseline == "zeros" else x.mean(0, keepdim=True)
    total = torch.zeros_like(x)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        total += autograd_jacobian(circuit, base + alpha * (x - base))
    return ((x - base) * total / steps).abs().mean(0)


def patching(circuit: Circuit, x: Tensor, g: torch.Generator) -> Tensor:
    y = circuit(x)
    donor = x[torch.randperm(len(x), generator=g)]
    out = torch.empty(x.shape[1], dtype=x.dtype)
    for i in range(x.shape[1]):
        xp = x.clone()
        xp[:, i] = donor[:, i]
        out[i] = (circuit(xp) - y).abs().mean()
    return out


def random_scores(circuit: Circuit, x: Tensor, g: torch.Generator) -> Tensor:
    return torch.rand(x.shape[1], generator=g, dtype=torch.float64)


def method_fns(ig_steps: int, ig_baseline: str) -> dict[str, Callable[[Circuit, Tensor, torch.Generator], Tensor]]:
    return {"correlation": correlation, "gradient": gradient,
            "integrated_gradients": lambda c, x, g: integrated_gradients(c, x, g, ig_steps, ig_baseline),
            "patching": patching, "random": random_scores}


def score_circuits(seeds: int, samples: int, ig_steps: int = 128, ig_baseline: str = "zeros", seed: int = 0,
                   regimes: tuple[Regime, ...] = REGIMES, on_seed: Callable[[int], None] | None = None
                   ) -> dict[str, dict[str, list[float]]]:
    """AUROC per (method, regime) and per seed; regime 'null' scores with scrambled labels."""
    fns = method_fns(ig_steps, ig_baseline)
    out: dict[str, dict[str, list[float]]] = {m: {r: [] for r in (*regimes, "null")} for m in fns}
    for s in range(seeds):
        g = make_generator(seed * 7919 + s)
        perm = torch.randperm(8, generator=g)
        null_labels = torch.zeros(8, dtype=torch.bool)
        null_labels[torch.randperm(8, generator=g)[:3]] = True
        for regime in regimes:
            circuit = build_circuit(regime, perm)
            x = sample_inputs(regime, samples, g, perm)
            for name, fn in fns.items():
                scores = fn(circuit, x, g)
                out[name][regime].append(auroc(scores, circuit.labels))
                if regime == "clean":
                    out[name]["null"].append(auroc(scores, null_labels))
        if on_seed is not None:
            on_seed(s)
    return out
