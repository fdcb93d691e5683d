"""intervene: edit SAE features or model components while the model runs; compare with the baseline."""

from neurotrace.lab.experiment import Experiment
from neurotrace.lab.intervention.run import run_intervene
from neurotrace.lab.intervention.schema import InterveneRequest, InterveneResult

__all__ = ["INTERVENE", "InterveneRequest", "InterveneResult", "run_intervene"]

INTERVENE = Experiment(run_intervene, InterveneRequest, InterveneResult, no_figures="its figures are drawn from arrays the run keeps outside report.json (redraw: issue #22 item 4)")
