"""ReLU SAE with an L1 penalty (the "standard" SAE).

``a = ReLU(pre)``. Loss per batch = mean over inputs of the squared reconstruction error summed over
dimensions, plus ``l1_coefficient`` times the mean over inputs of ``sum_f a_f * ||W_dec[f]||``.
Weighting each activation by its decoder row's norm stops the optimizer from shrinking activations
while growing the decoder to dodge the penalty, so the decoder needs no norm constraint. During
training the penalty is multiplied by ``penalty_scale`` (set by the training loop: SAELens'
``l1_warm_up_steps``, a linear ramp from 0 to 1 over the first steps, so features are not killed
before they have found data).
"""

from typing import Any

from torch import Tensor

from neurotrace.lab.sae.architectures.base import SAE, SAEConfig


class ReLUSAE(SAE):
    architecture = "relu"
    decoder_init_norm = 0.1

    def __init__(self, cfg: SAEConfig, l1_coefficient: float = 1.0, **_: Any) -> None:
        super().__init__(cfg)
        self.l1_coefficient = l1_coefficient

    def activation(self, pre: Tensor) -> Tensor:
        return pre.relu()

    def loss(self, h: Tensor, dead: Tensor | None = None, y: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        a = self.encode(h)                                         # (batch, d_sae)
        mse, _ = self.mse(h, a, y)
        l1 = (a * self.W_dec.norm(dim=1)).sum(-1).mean()
        return mse + self.penalty_scale * self.l1_coefficient * l1, {"mse": mse.detach(), "l1": l1.detach(),
                                                "fired": (a > 0).any(0).detach()}
