"""diff: two models, or one model with its adapter on and off, on the same inputs (core; MCP face in
:mod:`neurotrace.tools.diff`)."""

from neurotrace.lab.diff import figures
from neurotrace.lab.diff.run import run_diff
from neurotrace.lab.diff.schema import RESULTS_FILE, DiffRequest, DiffResult, DiffResults
from neurotrace.lab.experiment import Experiment, Figures

__all__ = ["DIFF", "DiffRequest", "DiffResult", "run_diff"]

DIFF = Experiment(run_diff, DiffRequest, DiffResult, figures=Figures(figures.FIGURES, RESULTS_FILE, DiffResults))
