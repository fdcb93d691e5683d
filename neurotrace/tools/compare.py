"""MCP face of compare: read trace runs of the same facts side by side."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.tracing import CompareRequest, CompareResult, run_compare
from neurotrace.tools._runner import run_in_lab


async def compare(request: CompareRequest, ctx: Context) -> Annotated[CallToolResult, CompareResult]:
    """How do models differ in where they store the same facts? Trace runs side by side, same kind and token category, by relative depth when depths differ."""
    return await run_in_lab(ctx, run_compare, request)
