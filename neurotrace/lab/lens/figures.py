"""logit_lens figures over logit_lens_results.json: the top-token table and the p(target)-by-layer curve."""

from typing import Any

import numpy as np

from neurotrace.lab.plotstyle import SEQUENTIAL_CMAP, finish, new_figure, short

MAX_POSITIONS = 16


def _label(text: str, limit: int = 9) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 2] + "..'"


def top_tokens(results: dict[str, Any], max_positions: int = MAX_POSITIONS) -> Any:
    """Layer x position table: the top-1 token (as text) in each cell, coloured by its probability."""
    tokens = results["tokens"][-max_positions:]
    start = len(results["tokens"]) - len(tokens)
    probs = np.array([[cell[0] for cell in row[start:]] for row in results["top_probs"]])   # (rows, pos)
    text = [[cell[0] for cell in row[start:]] for row in results["top_tokens"]]
    n_rows, n_pos = probs.shape
    fig, ax = new_figure(width=1.0 + 0.9 * n_pos, height=1.2 + 0.38 * n_rows)
    im = ax.imshow(probs, cmap=SEQUENTIAL_CMAP, vmin=0, vmax=1, aspect="auto", origin="lower")
    for r in range(n_rows):
        for p in range(n_pos):
            colour = "white" if probs[r, p] > 0.6 else "black"
            ax.text(p, r, _label(text[r][p]), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(n_pos), [_label(t, 12) for t in tokens], rotation=60, ha="right")
    ax.set_yticks(range(n_rows), results["rows"])
    ax.grid(False)
    fig.colorbar(im, ax=ax, label="p(top-1)")
    return finish(fig, "Logit lens: top-1 token per layer and position", short(results["model"]))


def target_curve(results: dict[str, Any]) -> Any:
    """p(target) at the last position by layer (logit lens, and tuned lens when fitted)."""
    fig, ax = new_figure(width=6, height=3.6)
    rows = results["rows"]
    pos = results.get("scored_position", -1)
    ax.plot(range(len(rows)), [row[pos] for row in results["p_target"]], marker="o", label="logit lens")
    if results.get("tuned"):
        ax.plot(range(len(rows)), results["tuned"]["p_target"], marker="s", label="tuned lens")
    ax.set_xticks(range(len(rows)), rows, rotation=45, ha="right")
    ax.set_ylabel(f"p({results['target']!r})")
    ax.set_ylim(0, 1)
    ax.legend()
    return finish(fig, f"p({results['target']!r}) at the scored position by layer", short(results["model"]))


FIGURES = {"top_tokens": top_tokens, "target_curve": target_curve}
