"""neurotrace: a mechanistic-interpretability lab for agents, served over MCP.

The Python face: make a :class:`Lab` (model cache + run store) and call any experiment::

    from neurotrace import Lab, LabSettings, TraceRequest, run_trace
    lab = Lab(LabSettings(runs_dir="runs"))
    result = run_trace(TraceRequest(models=["fact-gpt2-cyber"], pack="cybersecurity", max_facts=3), lab=lab)
    print(result.summary)

The core lives in :mod:`neurotrace.lab` (plain Python + torch, no MCP); the MCP server in
:mod:`neurotrace.server`, the thin tool faces in :mod:`neurotrace.tools`, and the CLI in
:mod:`neurotrace.cli`. Each tool ``x`` is ``run_x`` here, ``neurotrace x`` on the command line and the
MCP tool ``x``.
"""

__version__ = "0.1.0"

from neurotrace.lab.attention import AttentionRequest, AttentionResult, run_attention  # noqa: E402
from neurotrace.lab.attribution import AttributeRequest, AttributeResult, run_attribute  # noqa: E402
from neurotrace.lab.benchmark import BenchmarkRequest, BenchmarkResult, run_benchmark  # noqa: E402
from neurotrace.lab.capture import CaptureRequest, CaptureResult, run_capture  # noqa: E402
from neurotrace.lab.clamping import ClampSweepRequest, ClampSweepResult, run_clamp_sweep  # noqa: E402
from neurotrace.lab.facts import GenerateFactsRequest, GenerateFactsResult, run_generate_facts  # noqa: E402
from neurotrace.lab.intervention import InterveneRequest, InterveneResult, run_intervene  # noqa: E402
from neurotrace.lab.lab import Lab, LabSettings  # noqa: E402
from neurotrace.lab.lens import LogitLensRequest, LogitLensResult, run_logit_lens  # noqa: E402
from neurotrace.lab.load_model import LoadModelResult, run_load_model  # noqa: E402
from neurotrace.lab.model.weights.loading import ModelRef  # noqa: E402
from neurotrace.lab.neurons import FindNeuronsRequest, FindNeuronsResult, run_find_neurons  # noqa: E402
from neurotrace.lab.patching import PatchRequest, PatchResult, run_patch  # noqa: E402
from neurotrace.lab.plotting import PlotRequest, PlotResult, run_plot  # noqa: E402
from neurotrace.lab.probe import ProbeRequest, ProbeResult, run_probe  # noqa: E402
from neurotrace.lab.sae import FitSAERequest, FitSAEResult, run_fit_sae  # noqa: E402
from neurotrace.lab.steering import SteerRequest, SteerResult, run_steer  # noqa: E402
from neurotrace.lab.tracing import (  # noqa: E402
    CompareRequest,
    CompareResult,
    TraceRequest,
    TraceResult,
    run_compare,
    run_trace,
)

__all__ = [
    "BenchmarkRequest", "BenchmarkResult", "CaptureRequest", "CaptureResult", "ClampSweepRequest",
    "ClampSweepResult", "CompareRequest", "CompareResult", "FitSAERequest", "FitSAEResult",
    "GenerateFactsRequest", "GenerateFactsResult", "InterveneRequest", "InterveneResult", "Lab", "LabSettings",
    "LoadModelResult", "ModelRef", "PlotRequest", "PlotResult", "TraceRequest", "TraceResult", "run_benchmark",
    "run_capture", "run_clamp_sweep", "run_compare", "run_fit_sae", "run_generate_facts", "run_intervene",
    "run_load_model", "run_plot", "run_trace",
    "FindNeuronsRequest", "FindNeuronsResult", "run_find_neurons", "ProbeRequest", "ProbeResult", "run_probe",
    "SteerRequest", "SteerResult", "run_steer",
    "LogitLensRequest", "LogitLensResult", "run_logit_lens", "AttentionRequest", "AttentionResult",
    "run_attention", "AttributeRequest", "AttributeResult", "run_attribute", "PatchRequest", "PatchResult",
    "run_patch",
]
