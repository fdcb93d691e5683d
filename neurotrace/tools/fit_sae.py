"""MCP face of fit_sae (core: :mod:`neurotrace.lab.sae.run`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.sae import FitSAERequest, FitSAEResult, run_fit_sae
from neurotrace.tools._runner import run_in_lab


async def fit_sae(request: FitSAERequest, ctx: Context) -> Annotated[CallToolResult, FitSAEResult]:
    """Which sparse features make up the states a capture recorded? Use after capture, before intervene.

    Fits a seeded sparse autoencoder (TopK with AuxK, or ReLU + L1) on one captured site, inputs scaled to
    norm sqrt(d_in) and position-0/special rows left out, and reports SAELens-named metrics on held-out rows
    (explained variance, MSE, L0, dead features, CE loss score when spliced back) with a verdict (usable /
    marginal / unusable); writes sae.safetensors, sae_config.json, sae_metrics.json and each feature's
    top-activating tokens with context.
    """
    return await run_in_lab(ctx, run_fit_sae, request)
