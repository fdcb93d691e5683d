"""MCP face of the ground-truth attribution benchmark."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.benchmark import BenchmarkRequest, BenchmarkResult, run_benchmark
from neurotrace.tools._runner import run_in_lab


async def benchmark(request: BenchmarkRequest, ctx: Context) -> Annotated[CallToolResult, BenchmarkResult]:
    """Do attribution methods (correlation, gradients, integrated gradients, patching) find the known ground truth? Also checks trace on a planted-circuit transformer."""
    return await run_in_lab(ctx, run_benchmark, request)
