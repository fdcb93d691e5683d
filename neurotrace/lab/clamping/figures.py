"""Figures of a clamp sweep, re-renderable from its ``clamp_results.json``.

``FIGURES[kind](results, **options)`` returns a matplotlib Figure; ``results`` is the
:class:`~neurotrace.lab.clamping.schema.ClampResults` record that :mod:`neurotrace.lab.clamping.report`
writes, or its loaded JSON (validated here; the generic ``plot`` tool dispatches here). Kinds:

* ``improvement_rate``: fraction of collapsed baselines that each clamp value recovers (solid), the
  mean over its random same-layer controls (dotted, same colour), and the fraction of outputs that are
  collapsed at that value (dashed; the baseline's rate is the grey line).
* ``sweep_metrics``: collapse rate and mean distinct-2, loop fraction and normalised entropy per value.

Options of both: ``neurons`` (list of group labels to draw, e.g. ``["11:373"]``; default all) and
``title`` (replaces the default title). The x axis is symmetric-log (linear within +-1), so sweeps
like -100..100 stay readable; ticks sit at the swept values.
"""

from collections.abc import Callable
from typing import Any

from matplotlib.figure import Figure

from neurotrace.lab.clamping.schema import ClampResults, ValueSummary
from neurotrace.lab.plotstyle import finish, new_figure, short

RESULTS_FILE = "clamp_results.json"
METRICS = (("collapse_rate", "collapse rate"), ("mean_distinct_2", "mean distinct-2"),
           ("mean_loop_frac", "mean loop fraction"), ("mean_norm_entropy", "mean normalised entropy"))


def load(results: dict | ClampResults) -> ClampResults:
    """The typed record of a clamp sweep's results."""
    return results if isinstance(results, ClampResults) else ClampResults.model_validate(results)


def _value(s: ValueSummary) -> float:
    """The clamp value of a non-baseline summary."""
    if s.value is None:
        raise ValueError(f"{s.neurons}: the baseline has no clamp value")
    return s.value


def _groups(rec: ClampResults, neurons: list[str] | None
            ) -> tuple[dict[str, list[ValueSummary]], ValueSummary | None]:
    """Per-value summaries by neuron group (sorted by value), and the baseline summary."""
    groups: dict[str, list[ValueSummary]] = {}
    baseline = None
    for s in rec.per_value:
        if s.value is None:
            baseline = s
        elif neurons is None or s.neurons in neurons:
            groups.setdefault(s.neurons, []).append(s)
    if neurons is not None and not groups:
        known = sorted({s.neurons for s in rec.per_value if s.value is not None})
        raise ValueError(f"no neuron group among {neurons}; this run has {known}")
    return {k: sorted(v, key=_value) for k, v in groups.items()}, baseline


def _control_means(rec: ClampResults, label: str) -> dict[float, float]:
    """value -> mean improvement rate over the group's random-neuron controls."""
    by_value: dict[float, list[float]] = {}
    for s in rec.controls_per_value:
        if s.control_of == label and s.value is not None:
            by_value.setdefault(s.value, []).append(s.improvement_rate or 0.0)
    return {v: sum(r) / len(r) for v, r in sorted(by_value.items())}


def _axis(ax: Any, ylabel: str, groups: dict[str, list[ValueSummary]]) -> None:
    values = sorted({_value(s) for rows in groups.values() for s in rows})
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xticks(values, [f"{v:g}" for v in values], fontsize=7, rotation=45)
    ax.minorticks_off()
    ax.set_xlabel("clamp value")
    ax.set_ylabel(ylabel)


def _subtitle(rec: ClampResults) -> str:
    return (f"{short(rec.model)}, {rec.n_prompts} prompts, {rec.max_new_tokens} tokens, "
            f"clamp at {rec.position} positions")


def improvement_rate(results: dict | ClampResults, neurons: list[str] | None = None,
                     title: str | None = None) -> Figure:
    rec = load(results)
    groups, baseline = _groups(rec, neurons)
    fig, ax = new_figure(width=7, height=4.2)
    for i, (label, rows) in enumerate(groups.items()):
        xs = [_value(s) for s in rows]
        ax.plot(xs, [s.improvement_rate or 0.0 for s in rows], "o-", color=f"C{i % 10}",
                label=f"{label}: recovered")
        ax.plot(xs, [s.collapse_rate for s in rows], "x--", color=f"C{i % 10}", alpha=0.6,
                label=f"{label}: collapsed")
        ctrl = _control_means(rec, label)
        if ctrl:
            ax.plot(list(ctrl), list(ctrl.values()), ":", color=f"C{i % 10}", alpha=0.8,
                    label=f"{label}: random controls (mean)")
    if baseline is not None:
        ax.axhline(baseline.collapse_rate, color="grey", lw=1, label="baseline: collapsed")
    _axis(ax, "fraction of prompts", groups)
    ax.set_ylim(-0.03, 1.03)
    n_base = rec.n_collapsed_baselines
    if n_base == 0:
        ax.text(0.5, 0.5, "no collapsed baselines", transform=ax.transAxes, ha="center", color="grey")
    ax.legend(loc="best")
    return finish(fig, title or f"Recovery of {n_base} collapsed baselines by clamp value", _subtitle(rec))


def sweep_metrics(results: dict | ClampResults, neurons: list[str] | None = None,
                  title: str | None = None) -> Figure:
    rec = load(results)
    groups, baseline = _groups(rec, neurons)
    fig, axes = new_figure(2, 2, width=9, height=6.5)
    for ax, (key, name) in zip(axes.flat, METRICS, strict=True):
        for i, (label, rows) in enumerate(groups.items()):
            ax.plot([_value(s) for s in rows], [getattr(s, key) for s in rows], "o-", color=f"C{i % 10}",
                    label=label)
        if baseline is not None:
            ax.axhline(getattr(baseline, key), color="grey", lw=1, ls="--", label="baseline")
        _axis(ax, name, groups)
    axes.flat[0].legend()
    return finish(fig, title or "Output metrics by clamp value", _subtitle(rec))


FIGURES: dict[str, Callable[..., Figure]] = {
    "improvement_rate": improvement_rate,
    "sweep_metrics": sweep_metrics,
}
