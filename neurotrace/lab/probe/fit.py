"""Linear probes in plain torch: stratified folds, L2 logistic regression and ridge, deterministic.

Features are standardised with the training fold's mean and SD (SD floored at ``SD_FLOOR``), so the
L2 penalty treats every residual dimension alike.

* ``logistic``: minimise ``mean(softplus(-y (X w + b))) + l2/2 |w|^2`` over ``w, b`` (y in {-1, +1})
  with full-batch L-BFGS (strong-Wolfe line search) from zero; the loss is convex, so the start does not
  matter and the result is deterministic.
* ``ridge``: ``w = (X^T X + n l2 I)^-1 X^T (y - mean y)``, predicted label = sign of the score.

The direction a probe defines in the raw residual space is ``w / sd`` (the score's gradient), scaled to
unit norm; it points toward the positive label.
"""

import torch
from torch import Tensor

SD_FLOOR = 1e-6
LBFGS_STEPS = 100


def stratified_folds(y: Tensor, k: int, generator: torch.Generator) -> list[Tensor]:
    """``k`` index sets; each label's (shuffled) examples are dealt round-robin across the folds."""
    folds: list[list[int]] = [[] for _ in range(k)]
    slot = 0
    for label in (-1.0, 1.0):
        idx = torch.nonzero(y == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        for i in idx.tolist():
            folds[slot % k].append(i)
            slot += 1
    return [torch.tensor(sorted(f), dtype=torch.long) for f in folds if f]


def _standardise(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), x.std(0, unbiased=False).clamp(min=SD_FLOOR)


def fit(x: Tensor, y: Tensor, method: str, l2: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(w, b, mean, sd) of a probe on standardised features; y in {-1, +1}."""
    mu, sd = _standardise(x)
    z = (x - mu) / sd                                                          # (n, d)
    if method == "ridge":
        yc = y - y.mean()
        a = z.T @ z + len(y) * max(l2, 1e-8) * torch.eye(z.shape[1], dtype=z.dtype)
        w = torch.linalg.solve(a, z.T @ yc)
        return w, y.mean(), mu, sd
    w = torch.zeros(z.shape[1], dtype=z.dtype, requires_grad=True)
    b = torch.zeros((), dtype=z.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=LBFGS_STEPS, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-y * (z @ w + b)).mean() + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach(), mu, sd


def predict(x: Tensor, w: Tensor, b: Tensor, mu: Tensor, sd: Tensor) -> Tensor:
    """Predicted labels in {-1, +1}."""
    score = ((x - mu) / sd) @ w + b
    return torch.where(score >= 0, 1.0, -1.0).to(x.dtype)


def cross_validate(x: Tensor, y: Tensor, method: str, l2: float, k: int, generator: torch.Generator) -> Tensor:
    """Held-out accuracy of each fold, (folds,)."""
    folds = stratified_folds(y, k, generator)
    accs = []
    for test in folds:
        train = torch.ones(len(y), dtype=torch.bool)
        train[test] = False
        w, b, mu, sd = fit(x[train], y[train], method, l2)
        accs.append((predict(x[test], w, b, mu, sd) == y[test]).double().mean())
    return torch.stack(accs)


def direction(x: Tensor, y: Tensor, method: str, l2: float) -> Tensor:
    """The unit raw-space direction of a probe fitted on all rows (points toward y = +1)."""
    w, _, _, sd = fit(x, y, method, l2)
    raw = w / sd
    norm = raw.norm()
    return raw / norm if norm > 0 else raw
