"""Activation patching (``patch``): a clean and a corrupt prompt, one site family patched cell by cell.

Its own family (it left ``tracing/``, whose machinery it reads through the tracing face):
``schema`` (request, result, the saved records) <- ``run`` (orchestration) -> ``attn`` (per-head
q/k/v/pattern edits), ``path`` (path patching to receivers), then ``report`` (arrays, heatmaps).
"""

from neurotrace.lab.experiment import Experiment, Figures
from neurotrace.lab.patching import report
from neurotrace.lab.patching.run import run_patch
from neurotrace.lab.patching.schema import PATCH_RESULTS_FILE, PatchRequest, PatchResult, PatchResults

__all__ = ["PATCH", "PatchRequest", "PatchResult", "run_patch"]

PATCH = Experiment(run_patch, PatchRequest, PatchResult, figures=Figures(report.FIGURES, PATCH_RESULTS_FILE, PatchResults))
