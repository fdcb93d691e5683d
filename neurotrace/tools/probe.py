"""MCP face of probe (core: :mod:`neurotrace.lab.probe`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.probe import ProbeRequest, ProbeResult, run_probe
from neurotrace.tools._runner import run_in_lab


async def probe(request: ProbeRequest, ctx: Context) -> Annotated[CallToolResult, ProbeResult]:
    """Is a concept linearly readable at layer L? Fits seeded, cross-validated linear probes (logistic or ridge)
    for a two-label prompt set on the residual stream of every layer.

    Returns held-out accuracy per layer against a shuffled-label baseline, the best layer, a figure, and each
    layer's probe direction (directions.safetensors) for steer: direction_from {probe_run_id, layer}.
    """
    return await run_in_lab(ctx, run_probe, request)
