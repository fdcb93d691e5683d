"""Tensor shapes in signatures (jaxtyping) are checked under pytest: pyproject's addopts instrument the
core tensor modules with beartype, so a call with a wrongly shaped tensor fails at the call."""

import pytest
import torch
from jaxtyping import TypeCheckError

from neurotrace.lab.tracing.prepare import noise_hook


def test_a_wrongly_shaped_tensor_is_refused_at_the_call():
    noise_hook(torch.zeros(2, 1, 4), (0, 1))          # (row, n_subject, d_model): accepted
    with pytest.raises(TypeCheckError):
        noise_hook(torch.zeros(2, 4), (0, 1))          # a missing axis

