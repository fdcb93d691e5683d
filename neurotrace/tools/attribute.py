"""MCP face of direct logit attribution (core: :mod:`neurotrace.lab.attribution`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.attribution import AttributeRequest, AttributeResult, run_attribute
from neurotrace.tools._runner import run_in_lab


async def attribute(request: AttributeRequest, ctx: Context) -> Annotated[CallToolResult, AttributeResult]:
    """Which heads, MLPs and neurons write the answer? Direct logit attribution at the last position.

    Splits the answer's centred logit (or a logit difference) into embedding, per-layer attention/MLP, per-head
    and per-neuron shares that add up exactly (final-norm scale frozen, as TransformerLens). With a
    corrupt_prompt, also attribution patching over heads and neurons, the top ones checked by exact patching.
    """
    return await run_in_lab(ctx, run_attribute, request)
