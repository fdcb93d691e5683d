"""Collapse detection for generated text: simple metrics a reader can audit, and explicit thresholds.

A generation *collapses* when it stops saying new things: a token or phrase loop ("the the the",
"I don't know. I don't know. ..."), or a degenerate output (nothing at all). Every metric here is
computed on the generated tokens only (not the prompt), so it is tokenizer-exact and cheap:

* ``distinct_1/2/3``: unique n-grams / total n-grams (1.0 = no n-gram repeats; loops drive it down).
* ``loop_span`` and ``loop_period``: the longest stretch of tokens that is periodic with some period
  ``p`` and holds at least two full copies (``tokens[i] == tokens[i + p]`` across the stretch);
  ``loop_frac = loop_span / n_tokens`` and ``loop_copies = loop_span / loop_period`` (the longest
  repeated n-gram run). ``loop_frac`` near 1 means the whole output is one loop.
* ``token_entropy``: Shannon entropy (bits) of the token unigram distribution, and
  ``norm_entropy = token_entropy / log2(n_tokens)`` (1.0 = every token different).
* ``compression_ratio``: zlib-compressed bytes / raw bytes of the decoded text (low = repetitive;
  reported, and used only if ``max_compression_ratio`` is set, since it is unreliable on short text).

``is_collapsed`` fires if any rule in :class:`CollapseThresholds` fires; ``collapse_reasons`` names
which, so every flag can be checked by hand from the row's numbers. :func:`collapse_type` sorts a
collapsed output into one of three kinds that call for different readings:

* ``empty``: fewer than ``min_tokens`` tokens (an instruct model that ends at once without its chat
  template, an immediate end-of-text);
* ``loop``: the loop rule fired (a periodic stretch of >= 4 tokens with >= 2 copies covers the output);
* ``repetitive``: low distinct-2, entropy or compression ratio without one long loop (a few tokens
  shuffled, several short loops).
"""

import math
import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

METRIC_NAMES = ("n_tokens", "distinct_1", "distinct_2", "distinct_3", "loop_span", "loop_period", "loop_copies",
                "loop_frac", "token_entropy", "norm_entropy", "compression_ratio")


class CollapseThresholds(BaseModel):
    """The rules that flag a generation as collapsed (any one suffices)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_distinct_2: float = Field(0.5, ge=0, le=1, description="Collapsed if fewer than this fraction of "
                                  "the output's token bigrams are distinct (ordinary text: about 0.9+).")
    max_loop_frac: float = Field(0.5, gt=0, le=1, description="Collapsed if the longest periodic loop "
                                 "(>= 2 copies) covers at least this fraction of the output tokens.")
    min_norm_entropy: float = Field(0.5, ge=0, le=1, description="Collapsed if token entropy / log2(n_tokens) "
                                    "is below this (needs >= 4 tokens; ordinary text: about 0.9+).")
    max_compression_ratio: float | None = Field(None, gt=0, description="If set, collapsed if zlib bytes / "
                                                "raw bytes of the text is below this (off by default).")
    min_tokens: int = Field(1, ge=1, description="Collapsed ('empty') if fewer tokens were generated "
                            "(e.g. immediate end-of-text).")


def distinct_n(tokens: Sequence[int], n: int) -> float:
    """Unique n-grams / n-grams; 1.0 when there are fewer than n tokens."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def _longest_true_run(flags: np.ndarray) -> int:
    if not flags.any():
        return 0
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[0::2]).max())


def longest_loop(tokens: Sequence[int]) -> tuple[int, int]:
    """(span, period) of the longest periodic stretch with >= 2 full copies; (0, 0) if none."""
    arr = np.asarray(tokens)
    best_span, best_period = 0, 0
    for period in range(1, len(arr) // 2 + 1):
        run = _longest_true_run(arr[:-period] == arr[period:])
        if run >= period and run + period > best_span:
            best_span, best_period = run + period, period
    return best_span, best_period


def token_entropy(tokens: Sequence[int]) -> float:
    n = len(tokens)
    if n == 0:
        return 0.0
    return max(0.0, float(-sum(c / n * math.log2(c / n) for c in Counter(tokens).values())))


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 9)) / len(raw) if raw else 1.0


def text_metrics(tokens: Sequence[int], text: str) -> dict[str, float]:
    """Every metric of one generated output (tokens and their decoded text)."""
    n = len(tokens)
    span, period = longest_loop(tokens)
    entropy = token_entropy(tokens)
    return {
        "n_tokens": n, "distinct_1": distinct_n(tokens, 1), "distinct_2": distinct_n(tokens, 2),
        "distinct_3": distinct_n(tokens, 3), "loop_span": span, "loop_period": period,
        "loop_copies": span / period if period else 0.0, "loop_frac": span / n if n else 0.0,
        "token_entropy": entropy, "norm_entropy": entropy / math.log2(n) if n >= 2 else 1.0,
        "compression_ratio": compression_ratio(text),
    }


def collapse_reasons(metrics: dict[str, float], th: CollapseThresholds) -> list[str]:
    """Which rules fire for these metrics (empty list = not collapsed)."""
    if metrics["n_tokens"] < th.min_tokens:
        return [f"empty (n_tokens {metrics['n_tokens']} < {th.min_tokens})"]
    reasons = []
    if metrics["n_tokens"] >= 3 and metrics["distinct_2"] < th.min_distinct_2:
        reasons.append(f"distinct_2 {metrics['distinct_2']:.2f} < {th.min_distinct_2}")
    if metrics["loop_frac"] >= th.max_loop_frac and metrics["loop_span"] >= 4:
        reasons.append(f"loop_frac {metrics['loop_frac']:.2f} >= {th.max_loop_frac} "
                       f"(period {metrics['loop_period']}, {metrics['loop_copies']:.1f} copies)")
    if metrics["n_tokens"] >= 4 and metrics["norm_entropy"] < th.min_norm_entropy:
        reasons.append(f"norm_entropy {metrics['norm_entropy']:.2f} < {th.min_norm_entropy}")
    if th.max_compression_ratio is not None and metrics["compression_ratio"] < th.max_compression_ratio:
        reasons.append(f"compression_ratio {metrics['compression_ratio']:.2f} < {th.max_compression_ratio}")
    return reasons


CollapseType = Literal["empty", "loop", "repetitive"]
COLLAPSE_TYPES: tuple[CollapseType, ...] = ("empty", "loop", "repetitive")


def collapse_type(reasons: Sequence[str]) -> CollapseType | None:
    """The kind of a collapse from its reasons (None = not collapsed); see the module docstring."""
    if not reasons:
        return None
    if reasons[0].startswith("empty"):
        return "empty"
    if any(r.startswith("loop_frac") for r in reasons):
        return "loop"
    return "repetitive"


def describe_thresholds(th: CollapseThresholds) -> list[str]:
    """The rules in words, for reports."""
    rules = [f"fewer than {th.min_tokens} generated tokens (empty)",
             f"distinct_2 < {th.min_distinct_2} (outputs of >= 3 tokens)",
             f"loop_frac >= {th.max_loop_frac} (loop of >= 4 tokens with >= 2 copies)",
             f"norm_entropy < {th.min_norm_entropy} (outputs of >= 4 tokens)"]
    if th.max_compression_ratio is not None:
        rules.append(f"compression_ratio < {th.max_compression_ratio}")
    return rules
