"""benchmark's figure, drawn from the saved scores so ``plot`` can redraw it: the AUROC heatmap.

``auroc_rows`` turns ``auroc_per_seed.json`` (every AUROC per method, circuit and seed) into the mean and
std per (method, circuit), the numbers the run's table and ``tables/auroc.csv`` hold.
"""

from typing import Any

import torch
from matplotlib.figure import Figure

from neurotrace.lab.benchmark.attribution import METHODS
from neurotrace.lab.benchmark.circuits import REGIMES
from neurotrace.lab.benchmark.schema import SCORES_FILE, AurocRow, CircuitScores
from neurotrace.lab.plotstyle import finish, new_figure

RESULTS_FILE = SCORES_FILE


def auroc_rows(scores: dict[str, dict[str, list[float]]]) -> list[AurocRow]:
    """Mean and (sample) std of the AUROCs over seeds, per method and circuit."""
    rows = []
    for m in METHODS:
        for c, vals in scores[m].items():
            t = torch.tensor(vals, dtype=torch.float64)
            rows.append(AurocRow(method=m, circuit=c, auroc_mean=float(t.mean()), auroc_std=float(t.std()), n=len(vals)))
    return rows


def rounded(rows: list[AurocRow], digits: int = 4) -> list[AurocRow]:
    """The rows for the structured result and the heatmap (full precision stays in tables/auroc.csv)."""
    return [r.model_copy(update={"auroc_mean": round(r.auroc_mean, digits), "auroc_std": round(r.auroc_std, digits)})
            for r in rows]


def settings_title(scores: Any) -> str:
    """The heatmap's subtitle from the settings a request or a saved CircuitScores holds."""
    return f"{scores.seeds} seeds x {scores.samples} samples; IG {scores.ig_steps} steps, {scores.ig_baseline} baseline"


def heatmap(rows: list[AurocRow], title: str) -> Figure:
    """Methods x circuits AUROC (mean, ± std below); 0.5 = chance sits at the colormap's centre."""
    cols = [*REGIMES, "null"]
    cell = {(r.method, r.circuit): r for r in rows}
    grid = [[cell[(m, c)].auroc_mean for c in cols] for m in METHODS]
    fig, ax = new_figure(width=8, height=4.5)
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(len(cols)), [*REGIMES, "null\n(scrambled labels)"])
    ax.set_yticks(range(len(METHODS)), [m.replace("_", " ") for m in METHODS])
    ax.axvline(len(REGIMES) - 0.5, color="white", linewidth=3)
    for i, m in enumerate(METHODS):
        for j, c in enumerate(cols):
            r = cell[(m, c)]
            ax.text(j, i, f"{r.auroc_mean:.2f}\n± {r.auroc_std:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if abs(r.auroc_mean - 0.5) > 0.35 else "black")
    fig.colorbar(im, ax=ax, label="AUROC vs ground truth (0.5 = chance)")
    return finish(fig, "Attribution methods vs known ground truth (compiled circuits)", title)


def auroc_heatmap(results: dict[str, Any]) -> Figure:
    """The AUROC heatmap of a benchmark run's compiled-circuit part (from auroc_per_seed.json)."""
    scores = CircuitScores.model_validate(results)
    return heatmap(rounded(auroc_rows(scores.auroc)), settings_title(scores))


FIGURES = {"auroc_heatmap": auroc_heatmap}
