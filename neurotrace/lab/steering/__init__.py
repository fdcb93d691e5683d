"""steer: add a direction (contrastive pairs, SAE feature, probe) with an alpha sweep, against controls."""

from neurotrace.lab.steering.run import run_steer
from neurotrace.lab.steering.schema import SteerRequest, SteerResult

__all__ = ["SteerRequest", "SteerResult", "run_steer"]
