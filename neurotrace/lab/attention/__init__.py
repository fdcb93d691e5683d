"""attention: per-head patterns and head-type scores."""

from neurotrace.lab.attention.run import run_attention
from neurotrace.lab.attention.schema import AttentionRequest, AttentionResult

__all__ = ["AttentionRequest", "AttentionResult", "run_attention"]
