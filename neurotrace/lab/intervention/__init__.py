"""intervene: edit SAE features or model components while the model runs; compare with the baseline."""

from neurotrace.lab.experiment import Experiment, Figures
from neurotrace.lab.intervention import figures
from neurotrace.lab.intervention.run import run_intervene
from neurotrace.lab.intervention.schema import InterveneReport, InterveneRequest, InterveneResult

__all__ = ["INTERVENE", "InterveneRequest", "InterveneResult", "run_intervene"]

INTERVENE = Experiment(run_intervene, InterveneRequest, InterveneResult, figures=Figures(figures.FIGURES, figures.REPORT_FILE, InterveneReport,
                                   applies=figures.APPLIES))
