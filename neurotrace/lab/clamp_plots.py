"""Figures of a clamp sweep, re-renderable from its ``clamp_results.json``.

``FIGURES[kind](results)`` returns a matplotlib Figure; ``results`` is the loaded JSON that
:mod:`neurotrace.lab.clamp_report` writes. Kinds:

* ``improvement_rate``: fraction of collapsed baselines that each clamp value recovers (solid), and the
  fraction of outputs that are collapsed at that value (dashed; the baseline's rate is the grey line).
* ``sweep_metrics``: collapse rate and mean distinct-2, loop fraction and normalised entropy per value.

The x axis is symmetric-log (linear within +-1), so sweeps like -100..100 stay readable.
"""

from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _groups(results: dict[str, Any]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any] | None]:
    """Per-value summaries by neuron group (sorted by value), and the baseline summary."""
    groups: dict[str, list[dict[str, Any]]] = {}
    baseline = None
    for s in results.get("per_value", []):
        if s["value"] is None:
            baseline = s
        else:
            groups.setdefault(s["neurons"], []).append(s)
    return {k: sorted(v, key=lambda s: s["value"]) for k, v in groups.items()}, baseline


def _values(groups: dict[str, list[dict[str, Any]]]) -> list[float]:
    return sorted({s["value"] for rows in groups.values() for s in rows})


def _axis(ax: Any, title: str, ylabel: str, values: list[float]) -> None:
    ax.set_xscale("symlog", linthresh=1.0)
    if values:
        ax.set_xticks(values, [f"{v:g}" for v in values], fontsize=7, rotation=45)
    ax.set_xlabel("clamp value")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


def improvement_rate(results: dict[str, Any]) -> Figure:
    groups, baseline = _groups(results)
    fig, ax = plt.subplots(figsize=(7, 4))
    n_base = results.get("n_collapsed_baselines", 0)
    for i, (label, rows) in enumerate(groups.items()):
        color = f"C{i % 10}"
        xs = [s["value"] for s in rows]
        ax.plot(xs, [s["improvement_rate"] or 0.0 for s in rows], "o-", color=color,
                label=f"{label}: recovered")
        ax.plot(xs, [s["collapse_rate"] for s in rows], "x--", color=color, alpha=0.6,
                label=f"{label}: collapsed")
    if baseline is not None:
        ax.axhline(baseline["collapse_rate"], color="grey", lw=1, label="baseline: collapsed")
    _axis(ax, f"{results.get('model', '')}: recovery of {n_base} collapsed baselines "
              f"({results.get('position', '')} positions)", "fraction", _values(groups))
    ax.set_ylim(-0.03, 1.03)
    if n_base == 0:
        ax.text(0.5, 0.5, "no collapsed baselines", transform=ax.transAxes, ha="center", color="grey")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


METRICS = (("collapse_rate", "collapse rate"), ("mean_distinct_2", "mean distinct-2"),
           ("mean_loop_frac", "mean loop fraction"), ("mean_norm_entropy", "mean normalised entropy"))


def sweep_metrics(results: dict[str, Any]) -> Figure:
    groups, baseline = _groups(results)
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
    for ax, (key, name) in zip(axes.flat, METRICS, strict=True):
        for i, (label, rows) in enumerate(groups.items()):
            ax.plot([s["value"] for s in rows], [s[key] for s in rows], "o-", color=f"C{i % 10}", label=label)
        if baseline is not None:
            ax.axhline(baseline[key], color="grey", lw=1, ls="--", label="baseline")
        _axis(ax, name, name, _values(groups))
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{results.get('model', '')}: {results.get('n_prompts', 0)} prompts per value", fontsize=11)
    fig.tight_layout()
    return fig


FIGURES: dict[str, Callable[[dict[str, Any]], Figure]] = {
    "improvement_rate": improvement_rate,
    "sweep_metrics": sweep_metrics,
}
