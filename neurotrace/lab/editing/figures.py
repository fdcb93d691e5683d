"""Figures of an edit run, re-renderable from its ``edit_results.json``.

* ``metrics``: each CounterFact metric before (grey) and after (blue) the edit, with its 95% band and n.
* ``localisation_vs_editing`` (with ``sweep_layers``): per layer, the trace's indirect effect of the MLP at
  the last subject token beside the edit's efficacy and mean gain of p(new) at that layer (Hase et al. 2023,
  fig. 1), the located and best edit layers marked; r in the subtitle.
"""

from collections.abc import Callable

from matplotlib.figure import Figure

from neurotrace.lab.editing.schema import EditResults, Metrics
from neurotrace.lab.plotstyle import finish, new_figure, short

RESULTS_FILE = "edit_results.json"
RATES = ("efficacy", "generalisation", "specificity", "unrelated")


def load(results: dict | EditResults) -> EditResults:
    """The typed record of an edit run's results."""
    return results if isinstance(results, EditResults) else EditResults.model_validate(results)


def metrics(results: dict | EditResults, title: str | None = None) -> Figure:
    rec = load(results)
    fig, ax = new_figure(width=7.5, height=4.0)
    names = [k for k in Metrics.model_fields if k in RATES]
    for i, name in enumerate(names):
        pair = getattr(rec.metrics, name)
        for j, (score, colour) in enumerate(((pair.before, "#9e9e9e"), (pair.after, "C0"))):
            if score.value is None:
                continue
            x = i + (j - 0.5) * 0.35
            err = ([[score.value - score.low], [score.high - score.value]] if score.low is not None else None)
            ax.bar(x, score.value, width=0.33, color=colour, yerr=err, capsize=3,
                   label=("before" if j == 0 else "after") if i == 0 else None)
            ax.text(x, 0.02, f"n={score.n}", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of prompts (95% Wilson band)")
    ax.legend(loc="upper right")
    f = rec.metrics.fluency
    sub = (f"{short(rec.model)}, {rec.method} at layer(s) {rec.layers}, {len(rec.facts)} fact(s); fluency "
           f"{f.before.value if f.before.value is None else round(f.before.value, 2)} -> "
           f"{f.after.value if f.after.value is None else round(f.after.value, 2)}")
    return finish(fig, title or "Edit metrics before and after", sub)


def localisation_vs_editing(results: dict | EditResults, title: str | None = None) -> Figure:
    rec = load(results)
    s = rec.sweep
    fig, ax = new_figure(width=7.5, height=4.0)
    if s is None:
        return finish(fig, title or "No layer sweep in this run", short(rec.model))
    layers = [p.layer for p in s.points]
    ax.plot(layers, [p.efficacy for p in s.points], "o-", color="C0", label="edit efficacy at the layer")
    ax.plot(layers, [p.rewrite_gain for p in s.points], "s--", color="C2", label="mean gain of p(new)")
    ax.set_xlabel("layer")
    ax.set_ylabel("edit success")
    ax.set_ylim(-0.05, 1.05)
    if any(p.indirect_effect is not None for p in s.points):
        ax2 = ax.twinx()
        ax2.plot(layers, [p.indirect_effect if p.indirect_effect is not None else float("nan") for p in s.points],
                 "^-", color="C3", label="trace: MLP indirect effect (last subject token)")
        ax2.set_ylabel("avg indirect effect", color="C3")
        ax2.legend(loc="upper right", fontsize=8)
    if s.located_layer is not None:
        ax.axvline(s.located_layer, color="C3", lw=0.8, ls=":")
    ax.axvline(s.best_edit_layer, color="C0", lw=0.8, ls=":")
    ax.legend(loc="upper left", fontsize=8)
    r = lambda v: "n/a" if v is None else f"{v:+.2f}"  # noqa: E731
    sub = (f"{short(rec.model)}, {len(rec.facts)} facts; r(effect, gain): across layers {r(s.pearson_layers)}, "
           f"across {s.n_pairs} (fact, layer) pairs {r(s.pearson_pairs)}; located {s.located_layer}, "
           f"best edit {s.best_edit_layer}")
    return finish(fig, title or "Does localisation predict where editing works?", sub)


FIGURES: dict[str, Callable[..., Figure]] = {"metrics": metrics, "localisation_vs_editing": localisation_vs_editing}
#: without a kind, plot draws the sweep only for runs that swept the layers
APPLIES: dict[str, Callable[[dict], bool]] = {"localisation_vs_editing": lambda results: bool(results.get("sweep"))}
