"""Collapse metrics on hand-made token sequences, and the threshold rules that flag them."""

import math

import pytest

from neurotrace.lab.effects.collapse import (
    CollapseThresholds,
    collapse_reasons,
    compression_ratio,
    distinct_n,
    longest_loop,
    text_metrics,
    token_entropy,
)

DIVERSE = list(range(40))
LOOP = [7, 8, 9, 10] * 10
STUTTER = [1, 2, 3, 4, 5, 6] + [9] * 14


def test_distinct_n_counts_unique_ngrams():
    assert distinct_n([1, 2, 1, 2], 1) == 0.5
    assert distinct_n([1, 2, 1, 2], 2) == pytest.approx(2 / 3)
    assert distinct_n([1], 2) == 1.0


def test_longest_loop_finds_the_period_and_span():
    assert longest_loop(LOOP) == (40, 4)
    assert longest_loop(STUTTER) == (14, 1)
    assert longest_loop([1, 2, 3, 1, 2, 4]) == (0, 0)              # one repeat is not two full copies
    assert longest_loop([5, 1, 2, 1, 2, 6]) == (4, 2)


def test_entropy_and_compression_separate_loops_from_varied_text():
    assert token_entropy([3] * 8) == 0.0
    assert token_entropy([1, 2, 3, 4]) == pytest.approx(2.0)
    assert compression_ratio("the cat " * 20) < 0.3 < compression_ratio("Colourless green ideas sleep furiously.")


def test_metrics_of_a_loop_and_of_varied_output():
    loop = text_metrics(LOOP, "a b c d " * 10)
    assert loop["loop_frac"] == 1.0 and loop["loop_copies"] == 10 and loop["loop_period"] == 4
    assert loop["norm_entropy"] == pytest.approx(2 / math.log2(40))
    varied = text_metrics(DIVERSE, "x")
    assert varied["distinct_2"] == 1.0 and varied["loop_frac"] == 0.0 and varied["norm_entropy"] == pytest.approx(1.0)


def test_rules_flag_loops_and_empty_output_and_name_the_reason():
    th = CollapseThresholds()
    assert collapse_reasons(text_metrics(DIVERSE, "ok"), th) == []
    loop = collapse_reasons(text_metrics(LOOP, "a b c d " * 10), th)
    assert any(r.startswith("distinct_2") for r in loop) and any(r.startswith("loop_frac") for r in loop)
    assert any(r.startswith("loop_frac") for r in collapse_reasons(text_metrics(STUTTER, "s"), th))
    assert collapse_reasons(text_metrics([], ""), th)[0].startswith("empty")


def test_thresholds_are_respected_and_compression_rule_is_opt_in():
    m = text_metrics(STUTTER, "s")
    assert collapse_reasons(m, CollapseThresholds(max_loop_frac=0.9, min_distinct_2=0.1, min_norm_entropy=0.1)) == []
    m = text_metrics(DIVERSE, "the cat " * 20)
    assert collapse_reasons(m, CollapseThresholds()) == []
    assert collapse_reasons(m, CollapseThresholds(max_compression_ratio=0.5))[0].startswith("compression_ratio")
