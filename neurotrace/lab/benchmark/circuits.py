"""Compiled circuits: one-hidden-layer networks y = v . tanh(W x + b) whose causal features are known.

Eight standard-normal input features, three of them causal; each causal feature drives its own tanh
unit (weights set by hand, so the causal set is exact). Three regimes:

* ``clean`` - the five other features are independent noise with zero weight: a control on which
  every sensible attribution method should find the causal three.
* ``confounded`` - two non-causal features are near-copies of the two strongest causal features
  (``x_c = x_k + 0.05 * noise``) with zero weight: they *correlate* with y without causing it, so
  correlation ranks them with the causes while gradients, integrated gradients and patching see
  their zero weight.
* ``suppressor`` - one non-causal feature feeds two saturated gates whose thresholds sit 2h apart
  around x = a, with opposite output weights:

      s(x) = (A/2) * (tanh(k (x - a + h)) - tanh(k (x - a - h)))

  Outside the narrow window the gates saturate to the same value and cancel, so s is flat (~0): the
  feature changes y for only a few per cent of inputs, and replacing it with another sample's value
  moves y far less than replacing any causal feature. Inside the window the slope is steep (the
  gates' edges carry a total variation of 2A), so the *mean* |dy/dx| is the largest of all features
  and gradient saliency ranks it first. Integrated gradients sums the gradient along a path, where
  the rise and fall cancel (completeness), so it sees the small net effect, as long as the path
  steps resolve the edges (width ~1/k; with ``steps`` >= 16 they do for this k).

Ground truth is the causal set. The suppressor is scored as non-causal (its net effect is small,
not exactly zero: that is the point of the regime). Per seed the data are drawn afresh and the
feature columns are permuted, so no method can profit from position. The analytic input gradient
``W^T (v * (1 - tanh(Wx + b)^2))`` checks autograd.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Regime = Literal["clean", "confounded", "suppressor"]
REGIMES: tuple[Regime, ...] = ("clean", "confounded", "suppressor")
N_FEATURES = 8
CAUSAL = (0, 1, 2)
CONFOUNDERS = {3: 1, 4: 0}              # confounder feature -> the causal feature it copies
SUPPRESSOR = 3
_CAUSAL_W = (1.0, -1.2, 0.9)
_CAUSAL_V = (1.0, 1.3, -0.8)
_CAUSAL_B = (0.0, 0.1, 0.2)
#: suppressor gates: amplitude A, window centre a, half-width h, steepness k (see the module docstring)
SUPPRESSOR_A, SUPPRESSOR_CENTER, SUPPRESSOR_HALF_WIDTH, SUPPRESSOR_K = 4.0, 1.0, 0.05, 25.0


@dataclass
class Circuit:
    """y = v . tanh(W x + b) in float64, with a known causal feature set."""

    regime: Regime
    W: Tensor            # (hidden, features)
    b: Tensor            # (hidden,)
    v: Tensor            # (hidden,)
    causal: frozenset[int]

    def __call__(self, x: Tensor) -> Tensor:
        return torch.tanh(x @ self.W.T + self.b) @ self.v                 # (..., samples)

    def jacobian(self, x: Tensor) -> Tensor:
        """Analytic dy/dx per sample: (samples, features)."""
        t = torch.tanh(x @ self.W.T + self.b)                              # (samples, hidden)
        return ((1 - t**2) * self.v) @ self.W

    @property
    def labels(self) -> Tensor:
        """(features,) bool: True for the causal features."""
        return torch.tensor([i in self.causal for i in range(self.W.shape[1])])


def _unit(feature: int, weight: float) -> Tensor:
    row = torch.zeros(N_FEATURES, dtype=torch.float64)
    row[feature] = weight
    return row


def build_circuit(regime: Regime, perm: Tensor | None = None) -> Circuit:
    """The circuit for ``regime``; ``perm`` relabels feature columns (new index = perm[old])."""
    rows = [_unit(f, w) for f, w in zip(CAUSAL, _CAUSAL_W, strict=True)]
    b, v = list(_CAUSAL_B), list(_CAUSAL_V)
    if regime == "suppressor":
        a, h, k = SUPPRESSOR_CENTER, SUPPRESSOR_HALF_WIDTH, SUPPRESSOR_K
        for sign, threshold in ((1.0, a - h), (-1.0, a + h)):           # rising gate, then falling gate
            rows.append(_unit(SUPPRESSOR, k))
            b.append(-k * threshold)
            v.append(sign * SUPPRESSOR_A / 2)
    W = torch.stack(rows)
    causal = set(CAUSAL)
    if perm is not None:
        W = W[:, torch.argsort(perm)]
        causal = {int(perm[i]) for i in CAUSAL}
    return Circuit(regime, W, torch.tensor(b, dtype=torch.float64), torch.tensor(v, dtype=torch.float64),
                   frozenset(causal))


def sample_inputs(regime: Regime, n: int, g: torch.Generator, perm: Tensor | None = None) -> Tensor:
    """(n, features) float64 inputs; in ``confounded`` the confounders copy causal features."""
    x = torch.randn((n, N_FEATURES), generator=g, dtype=torch.float64)
    if regime == "confounded":
        for c, k in CONFOUNDERS.items():
            x[:, c] = x[:, k] + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    if perm is not None:
        out = torch.empty_like(x)
        out[:, perm] = x
        x = out
    return x
