"""MCP face of find_neurons (core: :mod:`neurotrace.lab.neurons`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.neurons import FindNeuronsRequest, FindNeuronsResult, run_find_neurons
from neurotrace.tools._runner import run_in_lab


async def find_neurons(request: FindNeuronsRequest, ctx: Context) -> Annotated[CallToolResult, FindNeuronsResult]:
    """Which MLP neurons should I clamp or ablate? Ranks neurons of blocks.{L}.mlp.hook_post for a question.

    'contrast': concept vs control prompts; 'collapse': collapsed vs healthy greedy generations (feeds
    clamp_sweep); 'top_examples': where one neuron fires most. Ranked by Cohen's d with a permutation
    p-value and Bonferroni/BH; refs are 'L:i' as clamp_sweep takes them. Association only: test causally.
    """
    return await run_in_lab(ctx, run_find_neurons, request)
