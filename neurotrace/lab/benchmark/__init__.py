"""benchmark: do attribution methods find known ground truth (compiled circuits, a planted transformer)?"""

from neurotrace.lab.benchmark.run import run_benchmark
from neurotrace.lab.benchmark.schema import BenchmarkRequest, BenchmarkResult
from neurotrace.lab.experiment import Experiment

__all__ = ["BENCHMARK", "BenchmarkRequest", "BenchmarkResult", "run_benchmark"]

BENCHMARK = Experiment(run_benchmark, BenchmarkRequest, BenchmarkResult, no_figures="its figure is drawn from the in-memory checks (redraw: issue #22 item 4)", reaches_hub=False)
