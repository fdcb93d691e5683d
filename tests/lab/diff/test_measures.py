"""diff's linear CKA: the (n, n) Gram form it uses for few tokens gives Kornblith et al.'s feature-space formula."""

import torch

from neurotrace.lab.diff.measures import linear_cka


def _feature_form(x: torch.Tensor, y: torch.Tensor) -> float:
    """Kornblith et al. (2019), eq. for linear CKA: |Y'X|_F^2 / (|X'X|_F |Y'Y|_F) on centred X, Y."""
    x, y = (x - x.mean(0)).double(), (y - y.mean(0)).double()
    return float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


def test_linear_cka_gram_form_equals_the_feature_form_and_keeps_its_invariances():
    g = torch.Generator().manual_seed(0)
    for n, d in ((12, 64), (64, 12)):                     # fewer tokens than dimensions (Gram form) and more
        x = torch.randn(n, d, generator=g)
        y = x @ torch.randn(d, d, generator=g) * 0.3 + torch.randn(n, d, generator=g)
        assert abs(linear_cka(x, y) - _feature_form(x, y)) < 1e-12
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
        assert abs(linear_cka(x, 2.5 * x @ q + 1.0) - 1.0) < 1e-9     # rotation, scale and shift: identical
        assert linear_cka(x, torch.randn(n, d, generator=g)) < 0.9
