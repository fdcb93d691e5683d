"""MCP face of the clamp sweep (core: :mod:`neurotrace.lab.clamping.run`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.clamping import ClampSweepRequest, ClampSweepResult, run_clamp_sweep
from neurotrace.tools._runner import run_in_lab


async def clamp_sweep(request: ClampSweepRequest, ctx: Context) -> Annotated[CallToolResult, ClampSweepResult]:
    """Which clamp values of an MLP neuron rescue prompts whose generations collapse into loops? Tests a
    neuron's causal role in degenerate generation (BCR).

    Clamps the given neurons (e.g. '11:373') to each sweep value while generating for every prompt, beside
    seeded random same-layer neuron controls; flags collapsed outputs (empty, loop, repetitive) with
    auditable text metrics; reports per value how many collapsed baselines recover and a verdict
    (specific / not above control / harmful) against the controls; writes every output, a CSV, a Markdown
    report and an improvement-rate plot.
    """
    return await run_in_lab(ctx, run_clamp_sweep, request)
