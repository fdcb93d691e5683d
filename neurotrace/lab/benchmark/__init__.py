"""benchmark: do attribution methods find known ground truth (compiled circuits, a planted transformer)?"""

from neurotrace.lab.benchmark import figures
from neurotrace.lab.benchmark.run import run_benchmark
from neurotrace.lab.benchmark.schema import BenchmarkRequest, BenchmarkResult, CircuitScores
from neurotrace.lab.experiment import Experiment, Figures

__all__ = ["BENCHMARK", "BenchmarkRequest", "BenchmarkResult", "run_benchmark"]

BENCHMARK = Experiment(run_benchmark, BenchmarkRequest, BenchmarkResult, figures=Figures(figures.FIGURES, figures.RESULTS_FILE, CircuitScores), reaches_hub=False)
