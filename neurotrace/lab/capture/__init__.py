"""capture: record activations at chosen sites over prompts or multi-step episodes.

fit_sae reads what a capture wrote (:func:`load_trace_dataset`; capture.json as :class:`CaptureRecord`);
intervene applies the same component edits (:data:`ComponentEdit`, :func:`step_hooks`, :func:`knockout`) at
its generation steps, and the same rule for when the KV cache is exact (:func:`plan_step_edits`, recorded as a
:class:`GenerationPlan`). edit estimates its key covariance over the same corpus contexts (:func:`corpus_texts`,
:func:`token_contexts`) with the same early-stopping forwards (:func:`forward_batches`).
"""

from neurotrace.lab.capture.batched import forward_batches
from neurotrace.lab.capture.corpus import corpus_texts, token_contexts
from neurotrace.lab.capture.edits import (
    COMPONENT_EDITS,
    EDIT_KINDS,
    AttentionKnockout,
    ComponentEdit,
    HeadAblation,
    MeanAblation,
    PatchActivations,
    SetNeurons,
    StepInfo,
    ZeroAblation,
    clean_text_acts,
    fed_positions,
    knockout,
    resolve_positions,
    step_hooks,
    validate,
)
from neurotrace.lab.capture.generation import POSITIONWISE, force_recompute, overall_plan, plan_step_edits
from neurotrace.lab.capture.run import run_capture
from neurotrace.lab.capture.schema import CaptureRecord, CaptureRequest, CaptureResult, GenerationPlan
from neurotrace.lab.capture.store import TraceDataset, capture_info, load_trace_dataset
from neurotrace.lab.experiment import Experiment

__all__ = ["CAPTURE", "COMPONENT_EDITS", "EDIT_KINDS", "POSITIONWISE", "AttentionKnockout", "CaptureRecord", "CaptureRequest",
           "corpus_texts", "token_contexts",
           "CaptureResult", "ComponentEdit", "GenerationPlan", "HeadAblation", "MeanAblation", "PatchActivations",
           "SetNeurons", "StepInfo",
           "ZeroAblation", "TraceDataset", "capture_info", "clean_text_acts", "corpus_texts", "fed_positions", "forward_batches", "force_recompute",
           "knockout", "load_trace_dataset", "overall_plan", "plan_step_edits", "resolve_positions", "run_capture",
           "step_hooks", "token_contexts", "validate"]

CAPTURE = Experiment(run_capture, CaptureRequest, CaptureResult, no_figures="its runs hold states (arrays/*.npy) and trace.jsonl, no figure")
