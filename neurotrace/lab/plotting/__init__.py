"""plot: re-draw any figure of any run from the results it saved (:mod:`.run` says how)."""

from neurotrace.lab.experiment import Experiment
from neurotrace.lab.plotting.run import REDRAWABLE, available_kinds, run_plot
from neurotrace.lab.plotting.schema import PlotRequest, PlotResult

__all__ = ["PLOT", "REDRAWABLE", "PlotRequest", "PlotResult", "available_kinds", "run_plot"]

PLOT = Experiment(run_plot, PlotRequest, PlotResult, reaches_hub=False,
                  no_figures="its figures are redrawings of another run's; plot that run again")
