"""Model-cache tools (no run): list_models, release_model."""

from typing import Any

from mcp.server.mcpserver import Context

from neurotrace.lab.load_model import model_catalog
from neurotrace.tools._faults import tool_faults
from neurotrace.tools._runner import lab_of


async def list_models(ctx: Context) -> dict[str, Any]:
    """Which models can be used? Loaded models (memory, budget) and every named model: embedded, and real catalog models with installed or not."""
    return model_catalog(lab_of(ctx))


async def release_model(model: str, ctx: Context) -> dict[str, Any]:
    """Unload a cached model (by name as loaded, or cache key) to free memory; models in use are kept."""
    with tool_faults():
        released = lab_of(ctx).cache.release(model)
    return {"released": released}
