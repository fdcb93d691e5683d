"""MCP face of steer (core: :mod:`neurotrace.lab.steering`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.steering import SteerRequest, SteerResult, run_steer
from neurotrace.tools._runner import run_in_lab


async def steer(request: SteerRequest, ctx: Context) -> Annotated[CallToolResult, SteerResult]:
    """Can I steer the model along a concept direction? Adds a direction (contrastive pairs, SAE feature or probe)
    to the residual stream with an alpha sweep.

    Measures p(targets) at the next token and greedy steered text, against random same-norm directions, a
    shuffled-pairs direction and control prompts; returns a verdict (causal, weak, confounded, no effect) by
    thresholds printed in report.md, and an effect-vs-alpha figure.
    """
    return await run_in_lab(ctx, run_steer, request)
