"""JumpReLU SAE (Rajamanoharan et al. 2024, Gemma Scope; SAELens' ``jumprelu`` with the ``step`` L0 loss).

``a = pre * (pre > theta)`` with a learned per-feature threshold ``theta = exp(log_theta)`` (initial
0.01, in the scaled input space). The loss is the reconstruction error plus ``l0_coefficient`` times
the mean number of active features per row (ramped in over the warm-up, ``penalty_scale``). The step
function has no useful gradient, so both it and the jump use straight-through estimators with a
rectangle kernel of width ``bandwidth`` (0.05): ``d/dtheta`` of ``H(pre - theta)`` is
``-(1/bw) rect((pre - theta)/bw)`` and of ``pre * H(pre - theta)`` is ``-(theta/bw) rect(...)``; ``d/dpre``
of the jump is ``H(pre - theta)`` (no estimator on the input), as in SAELens.
"""

from typing import Any

import torch
from torch import Tensor, nn

from neurotrace.lab.sae.architectures.base import SAE, SAEConfig

INIT_THRESHOLD, BANDWIDTH = 0.01, 0.05


def _rect(x: Tensor) -> Tensor:
    return ((x > -0.5) & (x < 0.5)).to(x.dtype)


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        g = (-(1.0 / bw) * _rect((x - threshold) / bw) * grad).reshape(-1, x.shape[-1]).sum(0)
        return None, g, None


class _Jump(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return x * (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        g = (-(threshold / bw) * _rect((x - threshold) / bw) * grad).reshape(-1, x.shape[-1]).sum(0)
        return (x > threshold).to(x.dtype) * grad, g, None


class JumpReLUSAE(SAE):
    architecture = "jumprelu"
    decoder_init_norm = 0.1

    def __init__(self, cfg: SAEConfig, l0_coefficient: float = 1.0, bandwidth: float = BANDWIDTH,
                 **_: Any) -> None:
        super().__init__(cfg)
        self.l0_coefficient = l0_coefficient
        self.bandwidth = bandwidth
        self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), float(torch.log(torch.tensor(INIT_THRESHOLD)))))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def activation(self, pre: Tensor) -> Tensor:
        return _Jump.apply(pre, self.threshold, self.bandwidth)

    def loss(self, h: Tensor, dead: Tensor | None = None, y: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        pre = self.pre_acts(h)
        a = self.activation(pre)
        mse, _ = self.mse(h, a, y)
        l0 = _Step.apply(pre, self.threshold, self.bandwidth).sum(-1).mean()
        return mse + self.penalty_scale * self.l0_coefficient * l0, {"mse": mse.detach(), "l0": l0.detach(),
                                                                     "fired": (a > 0).any(0).detach()}

    def export_threshold(self) -> Tensor:
        return self.threshold.detach().float()
