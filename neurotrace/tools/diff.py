"""MCP face of diff (core: :mod:`neurotrace.lab.diff`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.diff import DiffRequest, DiffResult, run_diff
from neurotrace.tools._runner import run_in_lab


async def diff(request: DiffRequest, ctx: Context) -> Annotated[CallToolResult, DiffResult]:
    """Where and on what inputs does a tuned model differ from its base?

    Runs the same prompts through both (one load with its LoRA adapter switched off and on, or two models
    sharing a tokenizer). Returns per layer the residual divergence (cosine, relative change, linear CKA) and logit-lens KL, the inputs
    and tokens whose outputs changed most (KL), attention change per head, and greedy generations side by
    side, each against a noise-floor control, so 'differs' means above that floor.
    """
    return await run_in_lab(ctx, run_diff, request)

