"""MCP face of fit_sae (core: :mod:`neurotrace.lab.sae.run`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.sae import FitSAERequest, FitSAEResult, run_fit_sae
from neurotrace.tools._runner import EXPERIMENT, run_in_lab


async def fit_sae(request: FitSAERequest, ctx: Context) -> Annotated[CallToolResult, FitSAEResult]:
    """Which sparse features make up the states a capture recorded? Use after capture, before intervene.

    Fits a seeded sparse autoencoder (TopK or ReLU + L1) on one captured site and reports reconstruction
    MSE, fraction of variance unexplained, L0, dead features, and the change in next-token loss and
    p(target) when the reconstruction is spliced back into the model; writes sae.safetensors,
    sae_config.json, sae_metrics.json and a table of each feature's top-activating tokens with context.
    """
    return await run_in_lab(ctx, run_fit_sae, request)


def register(server) -> None:
    server.add_tool(fit_sae, annotations=EXPERIMENT)
