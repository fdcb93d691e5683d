"""MCP face of the logit lens (core: :mod:`neurotrace.lab.lens`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.lens import LogitLensRequest, LogitLensResult, run_logit_lens
from neurotrace.tools._runner import run_in_lab


async def logit_lens(request: LogitLensRequest, ctx: Context) -> Annotated[CallToolResult, LogitLensResult]:
    """What does the model predict at each layer? Reads every layer's residual stream through the final norm
    and unembedding.

    Returns per layer the top tokens and p(target) at the last position (all positions in the run's table),
    the first layer where the target is top-1, and optionally a tuned lens's held-out KL.
    """
    return await run_in_lab(ctx, run_logit_lens, request)
