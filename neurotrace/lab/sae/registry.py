"""SAE architectures by name. Add a module to this package and one line here to add one."""

from typing import Any

from neurotrace.lab.errors import InputError
from neurotrace.lab.sae.base import SAE, SAEConfig
from neurotrace.lab.sae.relu import ReLUSAE
from neurotrace.lab.sae.topk import TopKSAE

ARCHITECTURES: dict[str, type[SAE]] = {"relu": ReLUSAE, "topk": TopKSAE}


def build_sae(cfg: SAEConfig, **train_options: Any) -> SAE:
    """A fresh (zero) SAE of ``cfg.architecture``; ``train_options`` e.g. ``l1_coefficient`` for relu."""
    cls = ARCHITECTURES.get(cfg.architecture)
    if cls is None:
        raise InputError("architecture", f"unknown SAE architecture {cfg.architecture!r}",
                         fix=f"use one of {sorted(ARCHITECTURES)}")
    return cls(cfg, **train_options)
