"""BatchTopK SAE (Bussmann et al. 2024, as SAELens trains it): ``k`` active features per row *on average*.

Training keeps the ``k * batch`` largest ReLU'd pre-activations of the whole batch (so a row may use
more or fewer than ``k``) and zeroes the rest; the loss is TopK's (reconstruction + AuxK for dead
features, :mod:`neurotrace.lab.sae.architectures.topk`), decoder rows unit-norm after every step. A running
threshold tracks the smallest kept activation: ``theta <- (1 - 0.01) theta + 0.01 min_kept`` (SAELens'
``topk_threshold_lr``). At inference (``eval()``), as SAELens saves it, the SAE is a JumpReLU with that
threshold for every feature: ``a = relu(pre) * (pre > theta)``, so a row's code no longer depends on
the other rows of its batch.
"""

from typing import Any

import torch
from torch import Tensor

from neurotrace.lab.sae.architectures.base import SAEConfig
from neurotrace.lab.sae.architectures.topk import TopKSAE

THRESHOLD_LR = 0.01


class BatchTopKSAE(TopKSAE):
    architecture = "batchtopk"

    def __init__(self, cfg: SAEConfig, **options: Any) -> None:
        super().__init__(cfg, **options)
        self.register_buffer("threshold", torch.zeros((), dtype=torch.float64))

    def batch_topk(self, pre: Tensor) -> Tensor:
        acts = pre.relu()
        flat = acts.reshape(-1)
        n = min(flat.numel(), self.k * acts.shape[:-1].numel())
        kept = flat.topk(n, sorted=False)
        return torch.zeros_like(flat).scatter(0, kept.indices, kept.values).reshape(acts.shape)

    def activation(self, pre: Tensor) -> Tensor:
        if self.training:
            return self.batch_topk(pre)
        return pre.relu() * (pre > self.threshold.to(pre.dtype)).to(pre.dtype)

    def loss(self, h: Tensor, dead: Tensor | None = None, y: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        pre = self.pre_acts(h)
        a = self.batch_topk(pre)
        mse, err = self.mse(h, a, y)
        with torch.no_grad():
            positive = a[a > 0]
            if positive.numel():
                self.threshold.mul_(1 - THRESHOLD_LR).add_(THRESHOLD_LR * positive.min().double())
        parts = {"mse": mse.detach(), "fired": (a > 0).any(0).detach()}
        n_dead = int(dead.sum()) if dead is not None else 0
        if n_dead == 0 or self.aux_coefficient == 0:
            return mse, parts
        masked = pre.masked_fill(~dead, float("-inf"))
        values, idx = masked.topk(min(self.aux_k, n_dead), dim=-1, sorted=False)
        e_hat = torch.zeros_like(pre).scatter(-1, idx, values) @ self.W_dec
        e = err.detach()
        aux = (e_hat - e).pow(2).sum(-1).mean() / e.pow(2).sum(-1).mean().clamp_min(1e-12)
        parts["aux"] = aux.detach()
        return mse + self.aux_coefficient * aux, parts

    def export_threshold(self) -> Tensor:
        return torch.full((self.cfg.d_sae,), float(self.threshold), dtype=torch.float32)
