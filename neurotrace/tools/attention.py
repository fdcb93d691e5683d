"""MCP face of attention patterns (core: :mod:`neurotrace.lab.attention`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.attention import AttentionRequest, AttentionResult, run_attention
from neurotrace.tools._runner import run_in_lab


async def attention(request: AttentionRequest, ctx: Context) -> Annotated[CallToolResult, AttentionResult]:
    """Which heads does the last token attend with, and which heads are previous-token, induction,
    duplicate-token or subject heads?

    Reads every head's pattern for the prompt (GQA and sliding-window layers included), scores head types on a
    repeated random sequence, and draws pattern grids; all patterns are saved as an array.
    """
    return await run_in_lab(ctx, run_attention, request)
