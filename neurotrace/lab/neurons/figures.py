"""Figures of a find_neurons run, re-renderable from its ``neurons_results.json``.

* ``ranking``: left, the top neurons' Cohen's d (bars, red = higher in group A, blue = lower); right,
  |d| against -log10 p for the same neurons, with the Bonferroni threshold at 0.05 as a dashed line.
* ``examples``: a neuron's top activations, labelled by token and prompt.
"""

import math
from collections.abc import Callable
from typing import Any

from matplotlib.figure import Figure

from neurotrace.lab.plotstyle import finish, new_figure, short

RESULTS_FILE = "neurons_results.json"


def ranking(results: dict[str, Any], k: int = 20, title: str | None = None) -> Figure:
    top = results.get("top", [])[:k]
    fig, (ax, ax2) = new_figure(1, 2, width=11, height=4.5)
    labels = [s["neuron"] for s in top]
    ds = [s["cohens_d"] for s in top]
    ax.barh(range(len(top)), [abs(d) for d in ds], color=["C3" if d > 0 else "C0" for d in ds])
    ax.set_yticks(range(len(top)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("|Cohen's d| (red: higher in A)")
    ax2.scatter([abs(d) for d in ds], [-math.log10(s["p_value"]) for s in top], s=14, color="C2")
    n = max(results.get("n_tested", 1), 1)
    ax2.axhline(-math.log10(0.05 / n), color="grey", ls="--", lw=1, label="Bonferroni 0.05")
    ax2.set_xscale("symlog", linthresh=1.0)
    ax2.set_xlabel("|Cohen's d|")
    ax2.set_ylabel("-log10 permutation p")
    ax2.legend()
    if not top:
        ax.text(0.5, 0.5, f"no ranking in a {results.get('mode')} run", transform=ax.transAxes, ha="center")
    a, b = results.get("groups", ["A", "B"])
    sub = (f"{short(results.get('model', ''))}: {results.get('n_a')} {a} vs {results.get('n_b')} {b} prompts, "
           f"{results.get('n_tested')} neurons, {results.get('n_permutations')} permutations")
    return finish(fig, title or f"Neurons that separate {a} from {b}", sub)


def examples(results: dict[str, Any], k: int = 20, title: str | None = None) -> Figure:
    rows = results.get("examples", [])[:k]
    fig, ax = new_figure(width=7, height=max(3.0, 0.25 * len(rows) + 1.5))
    ax.barh(range(len(rows)), [e["activation"] for e in rows], color="C1")
    ax.set_yticks(range(len(rows)), [f"{e['token']!r} (prompt {e['prompt_index']}, pos {e['pos']})" for e in rows],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("activation")
    if not rows:
        ax.text(0.5, 0.5, f"no examples in a {results.get('mode')} run (use mode='top_examples')",
                transform=ax.transAxes, ha="center")
    sub = (f"{short(results.get('model', ''))}: {results.get('n_positions')} positions, mean "
           f"{results.get('mean', 0):.3g}")
    return finish(fig, title or f"Top activations of neuron {results.get('neuron')}", sub)


FIGURES: dict[str, Callable[..., Figure]] = {"ranking": ranking, "examples": examples}
