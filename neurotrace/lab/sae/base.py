"""The SAE interface every architecture implements, and its on-disk format.

A sparse autoencoder maps a model state ``h`` (``d_in`` wide) to feature activations ``a``
(``d_sae`` wide, mostly zero) and back:

    pre   = (h - b_dec) @ W_enc + b_enc            # (..., d_sae)
    a     = activation(pre)                        # architecture-specific: ReLU, TopK, ...
    h_hat = a @ W_dec + b_dec                      # (..., d_in); row f of W_dec is feature f's direction

Subtracting ``b_dec`` before encoding centres the input on the decoder bias. ``input_scale`` (SAELens'
``normalize_activations="expected_average_only_in"``) multiplies ``h`` before encoding so that the
training rows have mean norm ``sqrt(d_in)``, and divides the reconstruction after decoding, so
``encode``/``decode`` always speak the model's units; the weights live in the scaled space, so a
feature's direction in model units is ``W_dec[f] / input_scale`` (:meth:`SAE.directions`). An architecture
(one module per file in this package, listed in :mod:`neurotrace.lab.sae.registry`) supplies the
activation, its training loss and any constraint applied after each optimizer step.

On disk an SAE is ``sae.safetensors`` (the four tensors) plus ``sae_config.json`` (the
:class:`SAEConfig`); :func:`neurotrace.lab.sae.registry.load_sae` reads both without pickle.
"""

from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float, Int
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

Architecture = Literal["relu", "topk"]


class SAEConfig(BaseModel):
    """What an SAE is: its shape, architecture and where its inputs came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    architecture: Architecture = Field(description="'relu' (ReLU + L1 penalty) or 'topk' (keep the k largest).")
    d_in: int = Field(ge=1, description="Width of the input states (d_model, d_mlp, ...).")
    d_sae: int = Field(ge=1, description="Number of features.")
    k: int | None = Field(None, ge=1, description="Active features per input (topk only).")
    site: str = Field("", description="The hook site the SAE reads, e.g. 'blocks.1.hook_resid_post'.")
    model: str = Field("", description="The model the states came from.")
    capture_run_id: str = Field("", description="The capture run the SAE was fitted on.")
    input_scale: float = Field(1.0, gt=0, description="Inputs are multiplied by this before encoding and "
                               "reconstructions divided by it (sqrt(d_in) / mean training-row norm; 1 = none).")


class SAE(nn.Module):
    """Base class: encode/decode, save/load. Subclasses set ``activation`` and ``loss``."""

    architecture: str = ""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_in))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    # -- the public API -------------------------------------------------------------------------
    @property
    def input_scale(self) -> float:
        return self.cfg.input_scale

    def pre_acts(self, h: Tensor) -> Tensor:
        return (h.to(self.W_enc.dtype) * self.input_scale - self.b_dec) @ self.W_enc + self.b_enc

    def activation(self, pre: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, h: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_sae"]:
        """Feature activations ``a`` (..., d_sae) of states ``h`` (..., d_in)."""
        return self.activation(self.pre_acts(h))

    def decode(self, a: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_in"]:
        """Reconstruction ``h_hat`` (..., d_in) of feature activations ``a`` (..., d_sae), in model units."""
        return (a @ self.W_dec + self.b_dec) / self.input_scale

    def directions(self, features: Int[Tensor, " n"]) -> Float[Tensor, "n d_in"]:
        """Decoder rows of ``features`` in model units (n, d_in): a change ``da`` moves h by ``da @ this``."""
        return self.W_dec[features] / self.input_scale

    def forward(self, h: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_in"]:
        return self.decode(self.encode(h))

    # -- training hooks -------------------------------------------------------------------------
    def loss(self, h: Tensor, dead: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss on a batch (batch, d_in) in the scaled space, its named parts (detached) and
        ``fired`` (d_sae,) bool; ``dead`` (d_sae,) marks features an architecture may revive (AuxK)."""
        raise NotImplementedError

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator, b_dec: Tensor | None = None) -> None:
        """Random unit decoder rows scaled by ``decoder_init_norm``; tied encoder; b_dec = data mean."""
        w = torch.randn(self.cfg.d_sae, self.cfg.d_in, generator=generator, device=generator.device)
        w = w / w.norm(dim=1, keepdim=True) * self.decoder_init_norm
        self.W_dec.copy_(w.to(self.W_dec.device))
        self.W_enc.copy_(w.T.to(self.W_enc.device))
        self.b_enc.zero_()
        self.b_dec.copy_(torch.zeros(self.cfg.d_in) if b_dec is None else b_dec)

    decoder_init_norm: float = 1.0
    #: multiplies the sparsity penalty (relu); the training loop ramps it up (``TrainSettings.warm_up_steps``)
    penalty_scale: float = 1.0

    def after_step(self) -> None:
        """A constraint applied after every optimizer step (none by default)."""

    # -- disk -----------------------------------------------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def save(self, directory: Path | str) -> None:
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file(self.tensors(), str(out / "sae.safetensors"))
        (out / "sae_config.json").write_text(self.cfg.model_dump_json(indent=2) + "\n", encoding="utf-8")



