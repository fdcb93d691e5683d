"""Causal tracing (``trace``) and side-by-side reading of traces (``compare``).

The benchmark's planted checks reuse the tracing machinery (:func:`prepare_fact`, :func:`noise_hook`,
:func:`subject_noise_std`), so the face exports it too.
"""

from neurotrace.lab.tracing.compare import CompareRequest, CompareResult, run_compare
from neurotrace.lab.tracing.patch import run_patch
from neurotrace.lab.tracing.patch_schema import PatchRequest, PatchResult
from neurotrace.lab.tracing.prepare import PreparedFact, noise_hook, prepare_fact, subject_noise_std
from neurotrace.lab.tracing.run import run_trace
from neurotrace.lab.tracing.schema import TraceRequest, TraceResult

__all__ = ["CompareRequest", "CompareResult", "PreparedFact", "TraceRequest", "TraceResult", "noise_hook",
           "prepare_fact", "run_compare", "run_trace", "subject_noise_std", "PatchRequest", "PatchResult", "run_patch"]
