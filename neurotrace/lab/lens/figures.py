"""logit_lens figures over logit_lens_results.json: the top-token table and the p(target)-by-layer curve."""

from typing import Any

import numpy as np

from neurotrace.lab.lens.schema import LogitLensResults
from neurotrace.lab.plotstyle import SEQUENTIAL_CMAP, finish, new_figure, short

MAX_POSITIONS = 16


def load(results: dict | LogitLensResults) -> LogitLensResults:
    """The typed record of a logit_lens run's results."""
    return results if isinstance(results, LogitLensResults) else LogitLensResults.model_validate(results)


def _label(text: str, limit: int = 9) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 2] + "..'"


def top_tokens(results: dict | LogitLensResults, max_positions: int = MAX_POSITIONS) -> Any:
    """Layer x position table: the top-1 token (as text) in each cell, coloured by its probability."""
    rec = load(results)
    tokens = rec.tokens[-max_positions:]
    start = len(rec.tokens) - len(tokens)
    probs = np.array([[cell[0] for cell in row[start:]] for row in rec.top_probs])   # (rows, pos)
    text = [[cell[0] for cell in row[start:]] for row in rec.top_tokens]
    n_rows, n_pos = probs.shape
    fig, ax = new_figure(width=1.0 + 0.9 * n_pos, height=1.2 + 0.38 * n_rows)
    im = ax.imshow(probs, cmap=SEQUENTIAL_CMAP, vmin=0, vmax=1, aspect="auto", origin="lower")
    for r in range(n_rows):
        for p in range(n_pos):
            colour = "white" if probs[r, p] > 0.6 else "black"
            ax.text(p, r, _label(text[r][p]), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(n_pos), [_label(t, 12) for t in tokens], rotation=60, ha="right")
    ax.set_yticks(range(n_rows), rec.rows)
    ax.grid(False)
    fig.colorbar(im, ax=ax, label="p(top-1)")
    return finish(fig, "Logit lens: top-1 token per layer and position", short(rec.model))


def target_curve(results: dict | LogitLensResults) -> Any:
    """p(target) at the scored position by layer (logit lens, and tuned lens when fitted)."""
    rec = load(results)
    fig, ax = new_figure(width=6, height=3.6)
    rows = rec.rows
    ax.plot(range(len(rows)), [row[rec.scored_position] for row in rec.p_target], marker="o", label="logit lens")
    if rec.tuned:
        ax.plot(range(len(rows)), rec.tuned.p_target, marker="s", label="tuned lens")
    ax.set_xticks(range(len(rows)), rows, rotation=45, ha="right")
    ax.set_ylabel(f"p({rec.target!r})")
    ax.set_ylim(0, 1)
    ax.legend()
    return finish(fig, f"p({rec.target!r}) at the scored position by layer", short(rec.model))


FIGURES = {"top_tokens": top_tokens, "target_curve": target_curve}
