"""The feature index of a dictionary over a capture: every row encoded once, kept sparse, sorted per feature.

:func:`encode_sparse` encodes the (memory-mapped) states in chunks and keeps each row's ``keep`` largest
activations (all of them for a TopK dictionary with ``k <= keep``; for ReLU dictionaries whose rows fire more,
the smaller ones are dropped and :attr:`FeatureIndex.truncated` says how many rows lost some). The index then
holds, per feature, its firing rows sorted by activation (descending) in one flat array with offsets, so a
feature's top contexts are its first entries, its quantile bands are slices of its run, and counts, sums and
maxima are reductions over runs. Memory: ``rows x keep`` (int32 + float32) plus one flat copy.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.sae import DENSE_FREQUENCY

CHUNK = 4096


@dataclass
class FeatureIndex:
    d_sae: int
    n_rows: int                  # rows encoded
    rows: np.ndarray             # (E,) int64: row of each firing entry, grouped by feature, descending activation
    acts: np.ndarray             # (E,) float32
    offsets: np.ndarray          # (d_sae + 1,) feature f's entries are [offsets[f], offsets[f+1])
    truncated: int = 0           # rows with more than `keep` active features (the rest dropped)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def frequency(self) -> np.ndarray:
        return self.counts / max(1, self.n_rows)

    @property
    def dense(self) -> np.ndarray:
        """(d_sae,) bool: fires on more than :data:`~neurotrace.lab.sae.DENSE_FREQUENCY` of the rows."""
        return self.frequency > DENSE_FREQUENCY

    @property
    def max_activation(self) -> np.ndarray:
        out = np.zeros(self.d_sae, dtype=np.float32)
        live = self.counts > 0
        out[live] = self.acts[self.offsets[:-1][live]]
        return out

    @property
    def mean_activation(self) -> np.ndarray:
        sums = np.bincount(np.repeat(np.arange(self.d_sae), self.counts), weights=self.acts, minlength=self.d_sae)
        counts = self.counts
        return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).astype(np.float32)

    def entries(self, feature: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, activations) where ``feature`` fires, largest first."""
        lo, hi = self.offsets[feature], self.offsets[feature + 1]
        return self.rows[lo:hi], self.acts[lo:hi]

    def activation(self, feature: int, rows: np.ndarray) -> np.ndarray:
        """The activation of ``feature`` at each of ``rows`` (0 where it did not fire)."""
        frows, facts = self.entries(feature)
        lookup = dict(zip(frows.tolist(), facts.tolist(), strict=True))
        return np.array([lookup.get(int(r), 0.0) for r in rows], dtype=np.float32)


@torch.no_grad()
def encode_sparse(encode: Callable[[torch.Tensor], torch.Tensor], states: np.ndarray, rows: np.ndarray, d_sae: int,
                  keep: int = 64, reporter: Reporter = NULL_REPORTER, device: str = "cpu") -> FeatureIndex:
    """Encode ``states[rows]`` chunk by chunk and build the :class:`FeatureIndex` (see the module docstring)."""
    keep = min(keep, d_sae)
    n = len(rows)
    idx = np.zeros((n, keep), dtype=np.int32)
    val = np.zeros((n, keep), dtype=np.float32)
    truncated = 0
    for start in range(0, n, CHUNK):
        reporter.step(start, n, f"encoding rows {start + 1}-{min(n, start + CHUNK)} of {n}")
        block = torch.from_numpy(np.asarray(states[rows[start:start + CHUNK]], dtype=np.float32)).to(device)
        acts = encode(block).float()
        truncated += int(((acts > 0).sum(-1) > keep).sum())
        top = acts.topk(keep, dim=-1)
        idx[start:start + len(block)] = top.indices.cpu().numpy()
        val[start:start + len(block)] = top.values.clamp(min=0).cpu().numpy()
    reporter.step(n, n, "indexing features")
    r, c = np.nonzero(val > 0)
    feat, act = idx[r, c], val[r, c]
    order = np.lexsort((-act, feat))
    counts = np.bincount(feat, minlength=d_sae)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return FeatureIndex(d_sae=d_sae, n_rows=n, rows=rows[r[order]].astype(np.int64), acts=act[order],
                        offsets=offsets, truncated=truncated)


def quantile_samples(index: FeatureIndex, feature: int, bands: int, per_band: int, seed: int
                     ) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
    """Per band of the feature's firing activations, split by rank into ``bands`` equal parts, highest first:
    (lowest, highest activation in the band, sampled rows, their activations)."""
    frows, facts = index.entries(feature)
    out = []
    if len(frows) == 0:
        return out
    rng = np.random.default_rng([seed, feature])
    edges = np.linspace(0, len(frows), bands + 1).round().astype(int)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi <= lo:
            continue
        pick = np.sort(rng.choice(np.arange(lo, hi), size=min(per_band, hi - lo), replace=False))
        out.append((float(facts[hi - 1]), float(facts[lo]), frows[pick], facts[pick]))
    return out


def histogram(acts: np.ndarray, bins: int = 20) -> dict[str, list[float]]:
    """Linear histogram of a feature's nonzero activations from 0 to its max."""
    if len(acts) == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(acts, bins=bins, range=(0.0, float(acts.max()) or 1.0))
    return {"edges": [round(float(e), 6) for e in edges], "counts": [float(c) for c in counts]}
