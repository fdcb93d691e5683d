"""Determinism: every stochastic step takes an explicit ``torch.Generator`` made here."""

import torch


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator seeded with ``seed`` on ``device`` (never touches the global RNG)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
