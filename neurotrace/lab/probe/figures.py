"""Figures of a probe run, re-renderable from its ``probe_results.json``.

* ``accuracy``: held-out accuracy by layer (with the fold SD as a band), the shuffled-label baseline
  and the majority-class chance line.
"""

from collections.abc import Callable

from matplotlib.figure import Figure

from neurotrace.lab.plotstyle import finish, new_figure, short
from neurotrace.lab.probe.schema import ProbeResults

RESULTS_FILE = "probe_results.json"


def load(results: dict | ProbeResults) -> ProbeResults:
    """The typed record of a probe run's results."""
    return results if isinstance(results, ProbeResults) else ProbeResults.model_validate(results)


def accuracy(results: dict | ProbeResults, title: str | None = None) -> Figure:
    rec = load(results)
    rows = rec.per_layer
    xs = [r.layer for r in rows]
    acc = [r.accuracy for r in rows]
    sd = [r.accuracy_std for r in rows]
    fig, ax = new_figure(width=7, height=4)
    ax.plot(xs, acc, "o-", color="C0", label="probe (held out)")
    ax.fill_between(xs, [a - s for a, s in zip(acc, sd, strict=True)], [a + s for a, s in zip(acc, sd, strict=True)],
                    color="C0", alpha=0.2)
    ax.plot(xs, [r.shuffled for r in rows], "x--", color="C3", label="shuffled labels")
    ax.axhline(rec.chance, color="grey", lw=1, label="chance (majority)")
    ax.set_xlabel("layer (residual entering block L)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(xs)
    ax.legend()
    neg, pos = rec.classes
    sub = (f"{short(rec.model)}: {pos!r} vs {neg!r}, {rec.n_prompts} prompts, "
           f"{rec.method}, {rec.k_folds}-fold CV, {rec.position} position")
    return finish(fig, title or "Linear probe accuracy by layer", sub)


FIGURES: dict[str, Callable[..., Figure]] = {"accuracy": accuracy}
