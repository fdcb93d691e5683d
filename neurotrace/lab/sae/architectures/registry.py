"""SAE architectures by name. Add a module to this package and one line here to add one."""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.sae.architectures.base import SAE, SAEConfig
from neurotrace.lab.sae.architectures.batchtopk import BatchTopKSAE
from neurotrace.lab.sae.architectures.jumprelu import JumpReLUSAE
from neurotrace.lab.sae.architectures.relu import ReLUSAE
from neurotrace.lab.sae.architectures.topk import TopKSAE

ARCHITECTURES: dict[str, type[SAE]] = {"relu": ReLUSAE, "topk": TopKSAE, "batchtopk": BatchTopKSAE,
                                       "jumprelu": JumpReLUSAE}


def build_sae(cfg: SAEConfig, **train_options: Any) -> SAE:
    """A fresh (zero) SAE of ``cfg.architecture``; ``train_options`` e.g. ``l1_coefficient`` for relu."""
    cls = ARCHITECTURES.get(cfg.architecture)
    if cls is None:
        raise InputError("architecture", f"unknown SAE architecture {cfg.architecture!r}",
                         fix=f"use one of {sorted(ARCHITECTURES)}")
    return cls(cfg, **train_options)


def from_tensors(cfg: SAEConfig, tensors: dict[str, Tensor], device: str | torch.device = "cpu") -> SAE:
    """An SAE of ``cfg`` holding ``tensors`` (W_enc, b_enc, W_dec, b_dec), in eval mode on ``device``."""
    sae = build_sae(cfg)
    sae.load_state_dict(tensors)
    sae.requires_grad_(False)                  # a loaded SAE is for inference; fit a new one to train
    return sae.to(device).eval()


def load_sae(path: Path | str, device: str | torch.device = "cpu") -> SAE:
    """Load from a directory holding sae.safetensors + sae_config.json (or the .safetensors path)."""
    p = Path(path)
    directory = p.parent if p.suffix == ".safetensors" else p
    cfg = SAEConfig.model_validate(json.loads((directory / "sae_config.json").read_text(encoding="utf-8")))
    return from_tensors(cfg, load_file(str(directory / "sae.safetensors")), device)
