"""MCP face of features (core: :mod:`neurotrace.lab.features.run`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.features import FeaturesRequest, FeaturesResult, run_features
from neurotrace.tools._runner import run_in_lab


async def features(request: FeaturesRequest, ctx: Context) -> Annotated[CallToolResult, FeaturesResult]:
    """What does each feature of a dictionary mean? Use after fit_sae, before intervene.

    Encodes a corpus capture at the dictionary's site (captures the built-in corpus if none is given) and
    returns feature pages (top contexts with the token highlighted, samples across activation quantiles,
    frequency and histogram, tokens promoted/suppressed through the unembedding), a cursor-paged listing of
    all features, the features most active on a prompt, and a search by activating text. Writes
    Neuronpedia-compatible JSON per page and tables/features.csv.
    """
    return await run_in_lab(ctx, run_features, request)

