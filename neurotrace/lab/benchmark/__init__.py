"""benchmark: do attribution methods find known ground truth (compiled circuits, a planted transformer)?"""

from neurotrace.lab.benchmark.run import run_benchmark
from neurotrace.lab.benchmark.schema import BenchmarkRequest, BenchmarkResult

__all__ = ["BenchmarkRequest", "BenchmarkResult", "run_benchmark"]
