"""MCP face of tokenize (core: :mod:`neurotrace.lab.tokenize`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.tokenize import TokenizeRequest, TokenizeResult, run_tokenize
from neurotrace.tools._runner import run_in_lab


async def tokenize(request: TokenizeRequest, ctx: Context) -> Annotated[CallToolResult, TokenizeResult]:
    """How do these texts tokenize? Token ids, pieces and counts per model, as the tools count positions.

    Reads the tokenizer files only (no weights)."""
    return await run_in_lab(ctx, run_tokenize, request)
