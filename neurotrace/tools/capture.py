"""MCP face of capture (core: :mod:`neurotrace.lab.capture.run`)."""

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from neurotrace.lab.capture import CaptureRequest, CaptureResult, run_capture
from neurotrace.tools._runner import run_in_lab


async def capture(request: CaptureRequest, ctx: Context) -> Annotated[CallToolResult, CaptureResult]:
    """What does the model compute at these sites on these inputs? Use first in the trace -> SAE -> intervene loop.

    Records activations at sites chosen by name pattern (globs like 'blocks.*.hook_resid_post' or 're:' regexes)
    over independent prompts or a multi-step episode (each step's generated output feeds the next), with
    caller metadata per step, optional skipping of the first positions or BOS, and step-scoped component
    edits shared with intervene (zero, zero_heads, set_neurons, mean, patch, knockout).
    Writes trace.jsonl (one line per step with pointers to rows) and one [N, D] .npy per site.
    """
    return await run_in_lab(ctx, run_capture, request)
