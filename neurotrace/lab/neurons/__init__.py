"""find_neurons: rank MLP neurons by a contrast of prompt sets or by collapsed generations; top examples."""

from neurotrace.lab.neurons.run import run_find_neurons
from neurotrace.lab.neurons.schema import FindNeuronsRequest, FindNeuronsResult

__all__ = ["FindNeuronsRequest", "FindNeuronsResult", "run_find_neurons"]
