"""Sparse autoencoder architectures: one module per architecture plus a registry."""

from neurotrace.lab.saes.base import SAE, SAEConfig
from neurotrace.lab.saes.registry import ARCHITECTURES, build_sae

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig", "build_sae"]
