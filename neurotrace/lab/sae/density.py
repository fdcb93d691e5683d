"""How often each feature of a dictionary fires (its *density*), and which features are *dense*.

A dense feature fires on a large share of all tokens: it carries the mean direction, position or another
always-present signal, not one meaning, and ablating it changes the model everywhere. Sun et al. (2025,
"Dense SAE Latents Are Features, Not Bugs") study latents firing on 10-50% of tokens; we call a feature
**dense** when it fires on more than :data:`DENSE_FREQUENCY` (10%) of tokens, and the features and intervene
tools flag such features and leave them out of their default "most active on this prompt" rankings, as
Neuronpedia's search-by-inference can drop features above a density threshold.

Where the density comes from (:func:`read_density`, attached to a loaded dictionary as ``d.density``):

* a fit_sae run: its ``saelens/sparsity.safetensors`` (its training and held-out rows; runs written before
  it: ``tables/feature_density.csv``);
* a SAELens folder: its ``sparsity.safetensors`` (SAELens' ``log_feature_sparsity``, log10 of the firing
  rate), when the folder has one;
* otherwise unknown (``None``): features measures it on its capture; intervene says it is unknown.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: a feature firing on more than this share of tokens is dense (see the module docstring)
DENSE_FREQUENCY = 0.10
SPARSITY_FILE = "sparsity.safetensors"      # SAELens' name; key "sparsity", log10 of each feature's firing rate
_LOG_FLOOR = 1e-10                          # SAELens adds this before log10


@dataclass(frozen=True)
class Density:
    """Each feature's firing rate (share of tokens, 0..1) and where it was measured."""

    rates: np.ndarray
    source: str

    def dense(self) -> np.ndarray:
        return self.rates > DENSE_FREQUENCY

    def of(self, feature: int) -> float:
        return float(self.rates[feature])


def sparsity_tensors(rates: np.ndarray) -> dict[str, torch.Tensor]:
    """SAELens' sparsity.safetensors content for firing ``rates``."""
    return {"sparsity": torch.log10(torch.as_tensor(np.asarray(rates), dtype=torch.float32) + _LOG_FLOOR)}


def from_sparsity(tensors: dict[str, torch.Tensor], d_sae: int, source: str) -> Density | None:
    """A Density from sparsity.safetensors' tensors (None when it has no (d_sae,) ``sparsity``)."""
    t = tensors.get("sparsity")
    if t is None or tuple(t.shape) != (d_sae,) or not torch.isfinite(t).all():
        return None
    rates = (10.0 ** t.double() - _LOG_FLOOR).clamp(0.0, 1.0).numpy()
    return Density(rates=rates, source=source)


def from_table(path: Path, d_sae: int, source: str) -> Density | None:
    """A Density from fit_sae's tables/feature_density.csv (feature, fire_count, fire_rate)."""
    if not path.is_file():
        return None
    rates = np.zeros(d_sae)
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            f = int(row["feature"])
            if 0 <= f < d_sae:
                rates[f] = float(row["fire_rate"])
    return Density(rates=rates, source=source)


def density_words(density: Density, features: list[int]) -> str:
    """'f3 (49% of tokens), f7 (12% of tokens)' for ``features``."""
    return ", ".join(f"f{f} ({density.of(f):.0%} of tokens)" for f in features)
