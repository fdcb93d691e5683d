"""MCP face of edit (core: :mod:`neurotrace.lab.editing`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.editing import EditRequest, EditResult, run_edit
from neurotrace.tools._runner import run_in_lab


async def edit(request: EditRequest, ctx: Context) -> Annotated[CallToolResult, EditResult]:
    """Can I rewrite a fact where the trace located it (ROME, MEMIT)?

    Default layer: the model's latest trace's MLP peak. CounterFact metrics before/after with n and 95% bands;
    unknown facts are reported, not edited. Returns `edited_model` (`<model>@edit:<run_id>`), usable by every
    tool; `sweep_layers` compares edit success per layer with the trace (Hase et al. 2023).
    """
    return await run_in_lab(ctx, run_edit, request)

