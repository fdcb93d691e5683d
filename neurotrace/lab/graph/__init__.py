"""graph: attribution graphs over per-layer transcoders (circuit-tracer's local replacement model)."""

from neurotrace.lab.graph.run import run_graph
from neurotrace.lab.graph.schema import GraphRequest, GraphResult

__all__ = ["GraphRequest", "GraphResult", "run_graph"]
