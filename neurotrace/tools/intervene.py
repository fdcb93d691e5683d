"""MCP face of intervene (core: :mod:`neurotrace.lab.intervention.run`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.intervention import InterveneRequest, InterveneResult, run_intervene
from neurotrace.tools._runner import run_in_lab


async def intervene(request: InterveneRequest, ctx: Context) -> Annotated[CallToolResult, InterveneResult]:
    """Does editing these SAE features or components change what the model says? Use after fit_sae.

    Applies policies per generation step (ablate/clamp/patch SAE features; capture's component edits: zero,
    zero_heads, set_neurons, mean, patch, knockout), compares baseline and intervened outputs (p(target),
    logit differences, text, per-step KL), gives a verdict (causal / weak / not above control / no measurable
    effect) against random directions of the same norm, and ranks SAE features by effect; policies=[] only ranks.
    """
    return await run_in_lab(ctx, run_intervene, request)
