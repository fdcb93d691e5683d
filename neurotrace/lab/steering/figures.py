"""Figures of a steer run, re-renderable from its ``steer_results.json``.

* ``effect_vs_alpha``: the mean change of p(targets) by alpha for the direction (solid), each random
  same-norm direction (thin grey; their mean dashed), the shuffled direction and the direction on the
  control prompts; the verdict in the title.
"""

from collections.abc import Callable

from matplotlib.figure import Figure

from neurotrace.lab.plotstyle import finish, new_figure, short
from neurotrace.lab.steering.schema import SteerResults

RESULTS_FILE = "steer_results.json"


def load(results: dict | SteerResults) -> SteerResults:
    """The typed record of a steer run's results."""
    return results if isinstance(results, SteerResults) else SteerResults.model_validate(results)


def effect_vs_alpha(results: dict | SteerResults, title: str | None = None) -> Figure:
    rec = load(results)
    xs = rec.alphas
    curves = rec.curves
    fig, ax = new_figure(width=7, height=4.2)
    randoms = [v for k, v in curves.items() if k.startswith("random_")]
    for i, ys in enumerate(randoms):
        ax.plot(xs, ys, color="grey", lw=0.8, alpha=0.6, label="random directions" if i == 0 else None)
    if randoms:
        mean = [sum(abs(r[j]) for r in randoms) / len(randoms) for j in range(len(xs))]
        ax.plot(xs, mean, "--", color="grey", label="random: mean |change|")
    if "shuffled" in curves:
        ax.plot(xs, curves["shuffled"], "s-", color="C1", label="shuffled pairs / labels")
    if "control_prompts" in curves:
        ax.plot(xs, curves["control_prompts"], "^-", color="C2", label="direction on control prompts")
    ax.plot(xs, curves.get("direction", []), "o-", color="C0", lw=2, label="direction")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("alpha (x mean residual norm)")
    ax.set_ylabel("change in p(targets)")
    ax.legend()
    sub = f"{short(rec.model)}: {', '.join(rec.sites)}, {rec.n_prompts} prompts, targets {rec.targets}"
    return finish(fig, title or f"Steering effect vs alpha: {rec.verdict}", sub)


FIGURES: dict[str, Callable[..., Figure]] = {"effect_vs_alpha": effect_vs_alpha}
