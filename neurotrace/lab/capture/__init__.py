"""capture: record activations at chosen sites over prompts or multi-step episodes.

fit_sae reads what a capture wrote (:func:`load_trace_dataset`); intervene shares the position rule of
capture's step-scoped edits (:func:`resolve_positions`).
"""

from neurotrace.lab.capture.edits import resolve_positions
from neurotrace.lab.capture.run import run_capture
from neurotrace.lab.capture.schema import CaptureRequest, CaptureResult
from neurotrace.lab.capture.store import TraceDataset, load_trace_dataset

__all__ = ["CaptureRequest", "CaptureResult", "TraceDataset", "load_trace_dataset", "resolve_positions",
           "run_capture"]
