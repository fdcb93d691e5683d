"""Figures of a fit_sae run, re-renderable from its ``sae_metrics.json``.

* ``training``: the training loss (and its reconstruction part) by step on a log axis, the dead-feature
  share by step, and the histogram of the features' firing rates on the evaluated rows, with the
  features that never fired drawn as their own bar left of the axis' floor.
"""

from collections.abc import Callable

from matplotlib.figure import Figure

from neurotrace.lab.plotstyle import finish, new_figure, short
from neurotrace.lab.sae.schema import SAEMetrics

RESULTS_FILE = "sae_metrics.json"


def load(results: dict | SAEMetrics) -> SAEMetrics:
    """The typed record of a fit_sae run's metrics."""
    return results if isinstance(results, SAEMetrics) else SAEMetrics.model_validate(results)


def _subtitle(rec: SAEMetrics) -> str:
    shape = f"{rec.architecture} {rec.d_in} -> {rec.d_sae}, " if rec.d_sae else ""
    where = f"{short(rec.model)} {rec.site}: " if rec.model else ""
    why = f" ({', '.join(rec.below_bar)})" if rec.below_bar else ""
    return f"{where}{shape}{rec.n_train_rows} training rows; verdict {rec.verdict}{why}"


def training(results: dict | SAEMetrics, title: str | None = None) -> Figure:
    rec = load(results)
    fig, (ax_loss, ax_dead, ax_density) = new_figure(1, 3, width=12, height=4)
    steps = [e.step for e in rec.training]
    ax_loss.plot(steps, [e.loss for e in rec.training], color="C0", label="total loss")
    ax_loss.plot(steps, [e.mse for e in rec.training], color="C1", ls="--", label="reconstruction (MSE)")
    ax_loss.set(xlabel="step", ylabel="loss (scaled units)", yscale="log", title="training loss")
    ax_loss.legend()
    ax_dead.plot(steps, [e.dead_fraction for e in rec.training], color="C3")
    ax_dead.set(xlabel="step", ylabel="dead share", ylim=(-0.02, 1.02),
                title=f"dead (no firing in {rec.dead_feature_window} steps)")
    bins = rec.fire_density
    if bins:
        width = bins[0].hi - bins[0].lo
        ax_density.bar([b.lo for b in bins], [b.n_features for b in bins], width=width, align="edge",
                       color="C0", label="fires")
        floor = bins[0].lo - 2 * width
        ax_density.bar([floor], [rec.never_fired or 0], width=width, align="edge", color="grey",
                       label=f"never fires ({rec.never_fired})")
        ax_density.axvline(bins[0].lo - 0.5 * width, color="grey", lw=0.8, ls=":")
        ax_density.legend()
    ax_density.set(xlabel="log10 firing rate (share of rows)", ylabel="features", title="feature density")
    return finish(fig, title or "SAE training and feature density", _subtitle(rec))


FIGURES: dict[str, Callable[..., Figure]] = {"training": training}
