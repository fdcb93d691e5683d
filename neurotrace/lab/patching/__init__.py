"""Activation patching (``patch``): a clean and a corrupt prompt, one site family patched cell by cell.

Its own family (it left ``tracing/``, whose machinery it reads through the tracing face):
``schema`` (request, result, the saved records) <- ``run`` (orchestration) -> ``attn`` (per-head
q/k/v/pattern edits), ``path`` (path patching to receivers), then ``report`` (arrays, heatmaps).
"""

from neurotrace.lab.patching.run import run_patch
from neurotrace.lab.patching.schema import PatchRequest, PatchResult

__all__ = ["PatchRequest", "PatchResult", "run_patch"]
