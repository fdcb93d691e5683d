"""MCP face of loading a model: load_model."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.load_model import LoadModelResult, run_load_model
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.tools._runner import call_in_thread, lab_of, package


async def load_model(request: ModelRef, ctx: Context) -> Annotated[CallToolResult, LoadModelResult]:
    """Load a model (embedded or catalog name, HuggingFace id, local dir or .gguf) into the shared cache and report its shape."""
    lab = lab_of(ctx)
    result = await call_in_thread(ctx, lambda reporter: run_load_model(request, lab=lab, reporter=reporter))
    return package(result, lab)
