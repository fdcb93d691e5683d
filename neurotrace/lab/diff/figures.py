"""diff figures over diff_results.json: residual divergence by layer, lens KL by layer, the inputs that
changed most, and attention change per head (each against the noise floor)."""

from typing import Any

import numpy as np

from neurotrace.lab.diff.schema import DiffResults
from neurotrace.lab.plotstyle import SEQUENTIAL_CMAP, finish, new_figure, short

MAX_INPUTS = 20


def load(results: dict | DiffResults) -> DiffResults:
    """The typed record of a diff run's results."""
    return results if isinstance(results, DiffResults) else DiffResults.model_validate(results)


def _pair(rec: DiffResults) -> str:
    return short(f"{rec.model} vs {rec.base}", 80)


def layers(results: dict | DiffResults) -> Any:
    """Per row: relative residual change (tuned and floor), 1 - cosine and 1 - linear CKA."""
    rec = load(results)
    x = np.arange(len(rec.layers))
    fig, ax = new_figure(width=7, height=3.8)
    ax.plot(x, [r.rel_change for r in rec.layers], marker="o", label="relative change")
    ax.plot(x, [r.floor_rel_change for r in rec.layers], linestyle="--", color="grey", label="floor (control)")
    ax.plot(x, [1 - r.cosine for r in rec.layers], marker=".", label="1 - cosine")
    ax.plot(x, [1 - r.cka for r in rec.layers], marker="s", markersize=3, label="1 - linear CKA")
    ax.set_xticks(x, [r.row for r in rec.layers], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("divergence")
    ax.legend(fontsize=7)
    return finish(fig, "Residual divergence by layer", _pair(rec))


def lens(results: dict | DiffResults) -> Any:
    """Per row: KL(base lens || tuned lens) at the inputs' last token, with the floor."""
    rec = load(results)
    x = np.arange(len(rec.layers))
    fig, ax = new_figure(width=7, height=3.6)
    ax.plot(x, [r.lens_kl for r in rec.layers], marker="o", label="base vs tuned")
    ax.plot(x, [r.floor_lens_kl for r in rec.layers], linestyle="--", color="grey", label="floor (control)")
    ax.set_xticks(x, [r.row for r in rec.layers], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("KL, nats")
    ax.legend(fontsize=7)
    return finish(fig, "Logit-lens divergence by layer (last token)", _pair(rec))


def inputs(results: dict | DiffResults) -> Any:
    """The inputs whose outputs changed most: largest per-token KL, with each input's floor."""
    rec = load(results)
    ranked = sorted(rec.inputs, key=lambda i: -i.kl_max)[:MAX_INPUTS][::-1]
    y = np.arange(len(ranked))
    fig, ax = new_figure(width=7.5, height=1.2 + 0.32 * len(ranked))
    ax.barh(y, [i.kl_max for i in ranked], label="max token KL")
    ax.scatter([i.floor_kl_max for i in ranked], y, color="black", marker="|", s=120, zorder=3, label="floor")
    ax.set_yticks(y, [short(i.prompt, 48) for i in ranked], fontsize=7)
    ax.set_xlabel("KL(base || tuned), nats")
    ax.legend(fontsize=7)
    return finish(fig, "Inputs whose outputs changed most", _pair(rec))


def heads(results: dict | DiffResults) -> Any:
    """Layer x head map of the attention change (total variation) minus the floor's."""
    rec = load(results)
    n_layers = max(h.layer for h in rec.heads) + 1
    grid = np.zeros((n_layers, rec.n_heads))
    for h in rec.heads:
        grid[h.layer, h.head] = max(0.0, h.tv - h.floor_tv)
    fig, ax = new_figure(width=1.5 + 0.45 * rec.n_heads, height=1.2 + 0.3 * n_layers)
    im = ax.imshow(grid, cmap=SEQUENTIAL_CMAP, vmin=0, aspect="auto", origin="lower")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.grid(False)
    fig.colorbar(im, ax=ax, label="TV above floor")
    return finish(fig, "Attention change per head (above the floor)", _pair(rec))


FIGURES = {"layers": layers, "lens": lens, "inputs": inputs, "heads": heads}
