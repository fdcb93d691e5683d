"""MCP face of plot (core: :mod:`neurotrace.lab.plotting`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.plotting import PlotRequest, PlotResult, run_plot
from neurotrace.tools._runner import run_in_lab


async def plot(request: PlotRequest, ctx: Context) -> Annotated[CallToolResult, PlotResult]:
    """Draw (or re-draw with other options) the figures of a finished run - trace heatmaps and curves, clamp
    sweep plots - and return them as images. Use after trace, compare or clamp_sweep.

    Reads the run's saved results, draws the requested figure kind (omit `kind` for all; an unknown kind
    lists the valid ones) and writes the PNGs into a new plot run linked to the source run.
    """
    return await run_in_lab(ctx, run_plot, request)
