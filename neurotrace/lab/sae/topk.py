"""TopK SAE: exactly ``k`` features may be active per input.

``a`` keeps the ``k`` largest pre-activations of each input (ReLU'd, so a kept negative value is 0)
and zeroes the rest; sparsity is set by ``k`` instead of a penalty, so the loss is the reconstruction
error alone (squared error summed over dimensions, mean over inputs). Decoder rows are kept at unit
norm after every step, so activations are in units of the input.
"""

import torch
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.sae.base import SAE, SAEConfig


class TopKSAE(SAE):
    architecture = "topk"
    decoder_init_norm = 1.0

    def __init__(self, cfg: SAEConfig, **_: float) -> None:
        if cfg.k is None or cfg.k > cfg.d_sae:
            raise InputError("k", f"topk needs 1 <= k <= d_sae ({cfg.d_sae}), got {cfg.k}",
                             fix="set k, e.g. 8, no larger than d_sae")
        super().__init__(cfg)
        self.k = cfg.k

    def activation(self, pre: Tensor) -> Tensor:
        values, idx = pre.topk(self.k, dim=-1, sorted=False)       # (..., k)
        return torch.zeros_like(pre).scatter(-1, idx, values.relu())

    def loss(self, h: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        h_hat = self(h)
        mse = (h_hat - h).pow(2).sum(-1).mean()
        return mse, {"mse": mse.detach()}

    @torch.no_grad()
    def after_step(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))
