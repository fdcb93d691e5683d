"""Causal tracing (``trace``) and side-by-side reading of traces (``compare``).

The benchmark's planted checks reuse the tracing machinery (:func:`prepare_fact`, :func:`noise_hook`,
:func:`subject_noise_std`), and activation patching (:mod:`neurotrace.lab.patching`) reads clean states
with :func:`clean_states` and shares cells by :func:`shared_prefix`, so the face exports them too; edit reuses
the Student t quantile (:func:`t975`).
"""

from neurotrace.lab.experiment import Experiment, Figures
from neurotrace.lab.tracing import figures
from neurotrace.lab.tracing.compare import CompareRequest, CompareResult, run_compare
from neurotrace.lab.tracing.forwards import clean_states
from neurotrace.lab.tracing.grids.rowplan import shared_prefix
from neurotrace.lab.tracing.noise import noise_hook, subject_noise_std
from neurotrace.lab.tracing.prepare import PreparedFact, prepare_fact
from neurotrace.lab.tracing.readings import t975
from neurotrace.lab.tracing.run import run_trace
from neurotrace.lab.tracing.schema import TraceRequest, TraceResult, TraceResults

__all__ = ["COMPARE", "TRACE", "CompareRequest", "CompareResult", "PreparedFact", "TraceRequest", "TraceResult", "clean_states",
           "noise_hook", "prepare_fact", "run_compare", "run_trace", "shared_prefix", "subject_noise_std", "t975"]

TRACE = Experiment(run_trace, TraceRequest, TraceResult,
                   figures=Figures(figures.FIGURES, figures.RESULTS_FILE, TraceResults, applies=figures.APPLIES))
COMPARE = Experiment(run_compare, CompareRequest, CompareResult, reaches_hub=False,
                     figures=Figures(figures.COMPARE_FIGURES, figures.COMPARE_RESULTS_FILE, TraceResults))
