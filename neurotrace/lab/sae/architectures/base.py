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
(one module per file in this package, listed in :mod:`neurotrace.lab.sae.architectures.registry`) supplies the
activation, its training loss and any constraint applied after each optimizer step.

On disk an SAE is ``sae.safetensors`` (the four tensors) plus ``sae_config.json`` (the
:class:`SAEConfig`); :func:`neurotrace.lab.sae.architectures.registry.load_sae` reads both without pickle.
"""

from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float, Int
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

Architecture = Literal["relu", "topk", "batchtopk", "jumprelu"]


class SAEConfig(BaseModel):
    """What an SAE is: its shape, architecture and where its inputs came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    architecture: Architecture = Field(description="'relu' (ReLU + L1 penalty), 'topk' (keep the k largest), "
                                       "'batchtopk' (the k * batch largest of a batch; JumpReLU at inference) or "
                                       "'jumprelu' (learned thresholds, L0 penalty).")
    d_in: int = Field(ge=1, description="Width of the input states (d_model, d_mlp, ...).")
    d_sae: int = Field(ge=1, description="Number of features.")
    k: int | None = Field(None, ge=1, description="Active features per input (topk only).")
    site: str = Field("", description="The hook site the SAE reads, e.g. 'blocks.1.hook_resid_post'.")
    model: str = Field("", description="The model the states came from.")
    capture_run_id: str = Field("", description="The capture run the SAE was fitted on.")
    input_scale: float = Field(1.0, gt=0, description="Inputs are multiplied by this before encoding and "
                               "reconstructions divided by it (sqrt(d_in) / mean training-row norm; 1 = none).")
    out_site: str = Field("", description="A transcoder's output site (e.g. 'blocks.6.hook_mlp_out'); '' = an SAE.")
    d_out: int | None = Field(None, ge=1, description="A transcoder's output width (null = d_in).")
    output_scale: float | None = Field(None, gt=0, description="A transcoder's target scale (sqrt(d_out) / mean "
                                       "target norm); null = input_scale.")
    skip: bool = Field(False, description="A transcoder's linear skip connection W_skip (d_out, d_in).")


class SAE(nn.Module):
    """Base class: encode/decode, save/load. Subclasses set ``activation`` and ``loss``."""

    architecture: str = ""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, self.d_out))
        self.b_dec = nn.Parameter(torch.zeros(self.d_out))
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(self.d_out, cfg.d_in))

    # -- the public API -------------------------------------------------------------------------
    @property
    def input_scale(self) -> float:
        return self.cfg.input_scale

    @property
    def output_scale(self) -> float:
        return self.cfg.output_scale or self.cfg.input_scale

    @property
    def transcoder(self) -> bool:
        return bool(self.cfg.out_site) and self.cfg.out_site != self.cfg.site

    @property
    def d_out(self) -> int:
        return self.cfg.d_out or self.cfg.d_in

    def centred(self, h: Tensor) -> Tensor:
        """The encoder's input in the scaled space: ``h * s_in - b_dec`` (a transcoder never subtracts b_dec)."""
        x = h.to(self.W_enc.dtype) * self.input_scale
        return x if self.transcoder else x - self.b_dec

    def pre_acts(self, h: Tensor) -> Tensor:
        return self.centred(h) @ self.W_enc + self.b_enc

    def skip_term(self, h: Tensor) -> Tensor | float:
        """A skip transcoder's ``(h s_in) @ W_skip.T`` in the scaled output space (0 without a skip)."""
        return (h.to(self.W_skip.dtype) * self.input_scale) @ self.W_skip.T if self.cfg.skip else 0.0

    def target(self, h: Tensor, y: Tensor | None) -> Tensor:
        """What the training loss reconstructs, in the scaled output space (``y``, or ``h`` for an SAE)."""
        return (h if y is None else y).to(self.W_dec.dtype) * self.output_scale

    def activation(self, pre: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, h: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_sae"]:
        """Feature activations ``a`` (..., d_sae) of states ``h`` (..., d_in)."""
        return self.activation(self.pre_acts(h))

    def decode(self, a: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_out"]:
        """Reconstruction ``h_hat`` (..., d_out) of feature activations ``a`` (..., d_sae), in model units
        (a transcoder's skip term is added by :meth:`forward`, which has the input)."""
        return (a @ self.W_dec + self.b_dec) / self.output_scale

    def directions(self, features: Int[Tensor, " n"]) -> Float[Tensor, "n d_out"]:
        """Decoder rows of ``features`` in model units (n, d_out): a change ``da`` moves h by ``da @ this``."""
        return self.W_dec[features] / self.output_scale

    def forward(self, h: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        out = self.decode(self.encode(h))
        return out + self.skip_term(h) / self.output_scale if self.cfg.skip else out

    # -- training hooks -------------------------------------------------------------------------
    def loss(self, h: Tensor, dead: Tensor | None = None, y: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss on a batch (batch, d_in) in the scaled space, its named parts (detached) and
        ``fired`` (d_sae,) bool; ``dead`` (d_sae,) marks features an architecture may revive (AuxK); ``y``
        (batch, d_out) is a transcoder's target (None: reconstruct ``h``)."""
        raise NotImplementedError

    def mse(self, h: Tensor, a: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """(squared error summed over dimensions, mean over rows; the error (batch, d_out)), scaled space."""
        err = self.target(h, y) - (a @ self.W_dec + self.b_dec + self.skip_term(h))
        return err.pow(2).sum(-1).mean(), err

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator, b_dec: Tensor | None = None) -> None:
        """SAELens' initialisation: random decoder rows of norm ``decoder_init_norm`` (unit for TopK), the
        encoder their transpose, ``b_enc = 0``, ``b_dec`` given (the data mean or geometric median in the
        scaled space; for a transcoder the target's) else 0, ``W_skip = 0``."""
        w = torch.randn(self.cfg.d_sae, self.d_out, generator=generator, device=generator.device)
        w = w / w.norm(dim=1, keepdim=True) * self.decoder_init_norm
        self.W_dec.copy_(w.to(self.W_dec.device))
        if self.transcoder:
            enc = torch.randn(self.cfg.d_in, self.cfg.d_sae, generator=generator, device=generator.device)
            self.W_enc.copy_((enc / enc.norm(dim=0, keepdim=True) * self.decoder_init_norm).to(self.W_enc.device))
        else:
            self.W_enc.copy_(w.T.to(self.W_enc.device))
        self.b_enc.zero_()
        self.b_dec.copy_(torch.zeros(self.d_out) if b_dec is None else b_dec)
        if self.cfg.skip:
            self.W_skip.zero_()

    def export_threshold(self) -> Tensor:
        """Per-feature JumpReLU threshold of the inference form (batchtopk, jumprelu)."""
        raise NotImplementedError

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



