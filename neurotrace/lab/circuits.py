"""Compiled circuits: one-hidden-layer networks y = v . tanh(W x + b) whose causal features are known.

Eight input features, three of them causal (each drives its own tanh unit). Three regimes:

* ``clean`` - the five other features are independent noise with zero weight (a control: every
  sensible method should find the causal three).
* ``confounded`` - two non-causal features are near-copies of the two strongest causal features
  (x_c = x_k + 0.05 noise) with zero weight: they *correlate* with y without causing it.
* ``suppressor`` - one non-causal feature feeds two saturated gates with opposite output weights,
  ``c * (tanh(k (x - 1) + d/2) - tanh(k (x - 1) - d/2))``: the gates cancel everywhere except in a
  narrow window around x = 1, so its net effect on y is near zero while its local slope there is
  steep (large mean |dy/dx|).

Ground truth is the causal set, exactly. Per seed, the data are drawn afresh and the feature columns
are permuted (so no method can profit from position). The analytic input gradient
``W^T (v * (1 - tanh(Wx + b)^2))`` is available for checking autograd.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Regime = Literal["clean", "confounded", "suppressor"]
REGIMES: tuple[Regime, ...] = ("clean", "confounded", "suppressor")
N_FEATURES = 8
CAUSAL = (0, 1, 2)
_CAUSAL_W = (1.0, -1.2, 0.9)
_CAUSAL_V = (1.0, 1.3, -0.8)
SUPPRESSOR_K, SUPPRESSOR_D, SUPPRESSOR_C = 200.0, 6.0, 3.0


@dataclass
class Circuit:
    """y = v . tanh(W x + b) in float64, with a known causal feature set."""

    regime: Regime
    W: Tensor            # (hidden, features)
    b: Tensor            # (hidden,)
    v: Tensor            # (hidden,)
    causal: frozenset[int]

    def __call__(self, x: Tensor) -> Tensor:
        return torch.tanh(x @ self.W.T + self.b) @ self.v                 # (samples,)

    def jacobian(self, x: Tensor) -> Tensor:
        """Analytic dy/dx per sample: (samples, features)."""
        t = torch.tanh(x @ self.W.T + self.b)                              # (samples, hidden)
        return ((1 - t**2) * self.v) @ self.W

    @property
    def labels(self) -> Tensor:
        return torch.tensor([i in self.causal for i in range(self.W.shape[1])])


def build_circuit(regime: Regime, perm: Tensor | None = None) -> Circuit:
    """The circuit for ``regime``; ``perm`` relabels feature columns (new index = perm[old])."""
    rows, b, v = [], [], []
    for i, (w, out) in enumerate(zip(_CAUSAL_W, _CAUSAL_V, strict=True)):
        row = torch.zeros(N_FEATURES, dtype=torch.float64)
        row[CAUSAL[i]] = w
        rows.append(row)
        b.append(0.1 * i)
        v.append(out)
    if regime == "suppressor":
        k, d, c = SUPPRESSOR_K, SUPPRESSOR_D, SUPPRESSOR_C
        for sign, offset in ((1.0, d / 2), (-1.0, -d / 2)):
            row = torch.zeros(N_FEATURES, dtype=torch.float64)
            row[3] = k
            rows.append(row)
            b.append(-k + offset)
            v.append(sign * c)
    W = torch.stack(rows)
    causal = set(CAUSAL)
    if perm is not None:
        W = W[:, torch.argsort(perm)]
        causal = {int(perm[i]) for i in CAUSAL}
    return Circuit(regime, W, torch.tensor(b, dtype=torch.float64), torch.tensor(v, dtype=torch.float64),
                   frozenset(causal))


def sample_inputs(regime: Regime, n: int, g: torch.Generator, perm: Tensor | None = None) -> Tensor:
    """(n, features) float64 inputs; confounders copy the strongest causal features (in original order)."""
    x = torch.randn((n, N_FEATURES), generator=g, dtype=torch.float64)
    if regime == "confounded":
        x[:, 3] = x[:, 1] + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
        x[:, 4] = x[:, 0] + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    if perm is not None:
        out = torch.empty_like(x)
        out[:, perm] = x
        x = out
    return x
