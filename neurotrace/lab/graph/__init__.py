"""graph: attribution graphs over per-layer transcoders (circuit-tracer's local replacement model)."""

from neurotrace.lab.experiment import Experiment, Figures
from neurotrace.lab.graph import figures
from neurotrace.lab.graph.run import run_graph
from neurotrace.lab.graph.schema import RESULTS_FILE, GraphRequest, GraphResult, GraphResults

__all__ = ["GRAPH", "GraphRequest", "GraphResult", "run_graph"]

GRAPH = Experiment(run_graph, GraphRequest, GraphResult, figures=Figures(figures.FIGURES, RESULTS_FILE, GraphResults))
