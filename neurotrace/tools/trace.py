"""MCP face of causal tracing: trace."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.tracing import TraceRequest, TraceResult, run_trace
from neurotrace.tools._runner import run_in_lab


async def trace(request: TraceRequest, ctx: Context) -> Annotated[CallToolResult, TraceResult]:
    """Where does a model store these facts? Causal tracing (ROME) on one or several models, at the last token or the mask.

    Give models plus facts (inline), a pack name, or a generate_facts dataset_run_id. Returns per model the
    facts it knows and those skipped, the peak with its 95% band, n and half-max layer range, readings
    (hand-off and arrival layers, cautions), an interpretation, heatmaps and curves.
    """
    return await run_in_lab(ctx, run_trace, request)
