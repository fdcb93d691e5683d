"""find_neurons: rank MLP neurons by a contrast of prompt sets or by collapsed generations; top examples."""

from neurotrace.lab.experiment import Experiment, Figures
from neurotrace.lab.neurons import figures
from neurotrace.lab.neurons.run import run_find_neurons
from neurotrace.lab.neurons.schema import (
    FindNeuronsRequest,
    FindNeuronsResult,
    NeuronExamplesResults,
    NeuronRankingResults,
)

__all__ = ["FIND_NEURONS", "FindNeuronsRequest", "FindNeuronsResult", "run_find_neurons"]

FIND_NEURONS = Experiment(run_find_neurons, FindNeuronsRequest, FindNeuronsResult, figures=Figures(figures.FIGURES, figures.RESULTS_FILE, NeuronRankingResults | NeuronExamplesResults))
