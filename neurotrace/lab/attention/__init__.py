"""attention: per-head patterns and head-type scores."""

from neurotrace.lab.attention import figures
from neurotrace.lab.attention.patterns import eager_attention
from neurotrace.lab.attention.run import run_attention
from neurotrace.lab.attention.schema import RESULTS_FILE, AttentionRequest, AttentionResult, AttentionResults
from neurotrace.lab.experiment import Experiment, Figures

__all__ = ["ATTENTION", "AttentionRequest", "AttentionResult", "eager_attention", "run_attention"]

ATTENTION = Experiment(run_attention, AttentionRequest, AttentionResult, figures=Figures(figures.FIGURES, RESULTS_FILE, AttentionResults))
