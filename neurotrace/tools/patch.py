"""MCP face of activation patching (core: :mod:`neurotrace.lab.patching.run`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.patching import PatchRequest, PatchResult, run_patch
from neurotrace.tools._runner import run_in_lab


async def patch(request: PatchRequest, ctx: Context) -> Annotated[CallToolResult, PatchResult]:
    """Does patching a component from the clean prompt into the corrupt one restore the answer? Activation
    patching of any same-length prompt pair (IOI-style).

    Patches resid_pre / attn_out / mlp_out per layer x position, head outputs (all or per position) and head
    q/k/v/pattern, path patching sender -> receiver heads; exact and batched; metric logit difference, p(target) or KL. Returns the most restoring cells and heatmaps.
    """
    return await run_in_lab(ctx, run_patch, request)
