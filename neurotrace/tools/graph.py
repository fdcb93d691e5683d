"""MCP face of attribution graphs (core: :mod:`neurotrace.lab.graph`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.graph import GraphRequest, GraphResult, run_graph
from neurotrace.tools._runner import run_in_lab


async def graph(request: GraphRequest, ctx: Context) -> Annotated[CallToolResult, GraphResult]:
    """Which transcoder features carry the answer? An attribution graph (circuit-tracer).

    Freezes attention patterns and norm denominators, replaces each MLP by its transcoder's active features
    plus an error node, and takes the direct linear effects between embeddings, features, errors and logits;
    prunes by influence (circuit-tracer's thresholds), writes the graph in circuit-tracer's / Neuronpedia's
    JSON and an interactive view in report.html, lists the top paths, and checks the graph by ablating or
    steering its top features (predicted vs actual target-logit change, against random features).
    """
    return await run_in_lab(ctx, run_graph, request)

