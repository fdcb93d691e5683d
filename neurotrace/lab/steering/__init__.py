"""steer: add a direction (contrastive pairs, SAE feature, probe) with an alpha sweep, against controls."""

from neurotrace.lab.experiment import Experiment, Figures
from neurotrace.lab.steering import figures
from neurotrace.lab.steering.run import run_steer
from neurotrace.lab.steering.schema import SteerRequest, SteerResult, SteerResults

__all__ = ["STEER", "SteerRequest", "SteerResult", "run_steer"]

STEER = Experiment(run_steer, SteerRequest, SteerResult, figures=Figures(figures.FIGURES, figures.RESULTS_FILE, SteerResults))
