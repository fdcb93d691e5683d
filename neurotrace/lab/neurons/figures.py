"""Figures of a find_neurons run, re-renderable from its ``neurons_results.json``.

* ``ranking``: left, the top neurons' Cohen's d (bars, red = higher in group A, blue = lower); right,
  |d| against -log10 p for the same neurons, with the Bonferroni threshold at 0.05 as a dashed line.
* ``examples``: a neuron's top activations, labelled by token and prompt.
"""

import math
from collections.abc import Callable

from matplotlib.figure import Figure

from neurotrace.lab.neurons.schema import (
    NEURONS_RESULTS,
    NeuronExamplesResults,
    NeuronRankingResults,
    NeuronsRecord,
)
from neurotrace.lab.plotstyle import finish, new_figure, short

RESULTS_FILE = "neurons_results.json"


def load(results: dict | NeuronsRecord) -> NeuronsRecord:
    """The typed record of a find_neurons run's results (its ``mode`` says which of the two)."""
    if isinstance(results, NeuronRankingResults | NeuronExamplesResults):
        return results
    return NEURONS_RESULTS.validate_python(results)


def ranking(results: dict | NeuronsRecord, k: int = 20, title: str | None = None) -> Figure:
    rec = load(results)
    ranked = isinstance(rec, NeuronRankingResults)
    top = rec.top[:k] if ranked else []
    fig, (ax, ax2) = new_figure(1, 2, width=11, height=4.5)
    labels = [s.neuron for s in top]
    ds = [s.cohens_d for s in top]
    ax.barh(range(len(top)), [abs(d) for d in ds], color=["C3" if d > 0 else "C0" for d in ds])
    ax.set_yticks(range(len(top)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("|Cohen's d| (red: higher in A)")
    ax2.scatter([abs(d) for d in ds], [-math.log10(s.p_value) for s in top], s=14, color="C2")
    n = max(rec.n_tested if ranked else 1, 1)
    ax2.axhline(-math.log10(0.05 / n), color="grey", ls="--", lw=1, label="Bonferroni 0.05")
    ax2.set_xscale("symlog", linthresh=1.0)
    ax2.set_xlabel("|Cohen's d|")
    ax2.set_ylabel("-log10 permutation p")
    ax2.legend()
    if not top:
        ax.text(0.5, 0.5, f"no ranking in a {rec.mode} run", transform=ax.transAxes, ha="center")
    a, b = rec.groups if ranked else ("A", "B")
    sub = (f"{short(rec.model)}: {rec.n_a} {a} vs {rec.n_b} {b} prompts, {rec.n_tested} neurons, "
           f"{rec.n_permutations} permutations" if ranked else f"{short(rec.model)}: a {rec.mode} run")
    return finish(fig, title or f"Neurons that separate {a} from {b}", sub)


def examples(results: dict | NeuronsRecord, k: int = 20, title: str | None = None) -> Figure:
    rec = load(results)
    found = isinstance(rec, NeuronExamplesResults)
    rows = rec.examples[:k] if found else []
    fig, ax = new_figure(width=7, height=max(3.0, 0.25 * len(rows) + 1.5))
    ax.barh(range(len(rows)), [e.activation for e in rows], color="C1")
    ax.set_yticks(range(len(rows)), [f"{e.token!r} (prompt {e.prompt_index}, pos {e.pos})" for e in rows],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("activation")
    if not rows:
        ax.text(0.5, 0.5, f"no examples in a {rec.mode} run (use mode='top_examples')",
                transform=ax.transAxes, ha="center")
    if not found:
        return finish(fig, title or "Top activations of a neuron", f"{short(rec.model)}: a {rec.mode} run")
    sub = f"{short(rec.model)}: {rec.n_positions} positions, mean {rec.mean:.3g}"
    return finish(fig, title or f"Top activations of neuron {rec.neuron}", sub)


FIGURES: dict[str, Callable[..., Figure]] = {"ranking": ranking, "examples": examples}
