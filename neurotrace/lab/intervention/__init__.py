"""intervene: edit SAE features or model components while the model runs; compare with the baseline."""

from neurotrace.lab.intervention.run import run_intervene
from neurotrace.lab.intervention.schema import InterveneRequest, InterveneResult

__all__ = ["InterveneRequest", "InterveneResult", "run_intervene"]
