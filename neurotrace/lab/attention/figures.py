"""attention figures over attention_results.json: a grid of head patterns and the head-score maps."""

import math
from typing import Any

import numpy as np

from neurotrace.lab.attention.schema import AttentionResults
from neurotrace.lab.plotstyle import SEQUENTIAL_CMAP, finish, new_figure, short

MAX_TICKS = 24


def load(results: dict | AttentionResults) -> AttentionResults:
    """The typed record of an attention run's results."""
    return results if isinstance(results, AttentionResults) else AttentionResults.model_validate(results)


def pattern_grid(results: dict | AttentionResults) -> Any:
    """One query x key panel per reported head (rows: query positions, columns: attended positions)."""
    rec = load(results)
    heads = list(rec.shown_patterns)
    cols = min(4, len(heads))
    rows = math.ceil(len(heads) / cols)
    tokens = rec.tokens
    labels = [repr(t)[:10] for t in tokens] if len(tokens) <= MAX_TICKS else None
    fig, axes = new_figure(rows, cols, width=3.2 * cols + 1, height=3.0 * rows + 1, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(heads):
            ax.axis("off")
            continue
        ax.imshow(np.array(rec.shown_patterns[heads[i]]), cmap=SEQUENTIAL_CMAP, vmin=0, vmax=1)
        ax.set_title(f"head {heads[i]}")
        ax.grid(False)
        if labels:
            ax.set_xticks(range(len(tokens)), labels, rotation=90, fontsize=6)
            ax.set_yticks(range(len(tokens)), labels, fontsize=6)
    return finish(fig, "Attention patterns (query rows attend to key columns)", short(rec.model))


def head_scores(results: dict | AttentionResults) -> Any:
    """Layer x head maps of each head-type score."""
    rec = load(results)
    kinds = list(rec.scores)
    fig, axes = new_figure(1, len(kinds), width=3.4 * len(kinds), height=3.4, squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        data = np.array(rec.scores[kind])
        im = ax.imshow(data, cmap=SEQUENTIAL_CMAP, vmin=0, vmax=1, aspect="auto", origin="lower")
        ax.set_title(kind.replace("_", "-"))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.grid(False)
    fig = finish(fig, "Head-type scores", short(rec.model))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="mean attention")
    return fig


FIGURES = {"pattern_grid": pattern_grid, "head_scores": head_scores}
