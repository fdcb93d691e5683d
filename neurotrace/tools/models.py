"""Model-lab tools: load_model, list_models, release_model."""

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.load_model import LoadModelResult, model_catalog, run_load_model
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.tools._faults import tool_faults
from neurotrace.tools._runner import call_in_thread, lab_of, package


async def load_model(request: ModelRef, ctx: Context) -> Annotated[CallToolResult, LoadModelResult]:
    """Load a model (embedded or catalog name, HuggingFace id, local dir or .gguf) into the shared cache and report its shape."""
    lab = lab_of(ctx)
    result = await call_in_thread(ctx, lambda reporter: run_load_model(request, lab=lab, reporter=reporter))
    return package(result, lab)


async def list_models(ctx: Context) -> dict[str, Any]:
    """Which models can be used? Loaded models (memory, budget) and every named model: embedded, and real catalog models with installed or not."""
    return model_catalog(lab_of(ctx))


async def release_model(model: str, ctx: Context) -> dict[str, Any]:
    """Unload a cached model (by name as loaded, or cache key) to free memory; models in use are kept."""
    with tool_faults():
        released = lab_of(ctx).cache.release(model)
    return {"released": released}
