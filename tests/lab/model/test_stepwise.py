"""Stepwise greedy generation: the KV-cache path equals full recomputation where it is used."""

import pytest
import torch

from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.runtime.stepwise import continue_greedy
from neurotrace.lab.model.weights.loading import ModelRef, load

PROMPT = "the king of france lives in the city of"


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request, tiny_gpt2, tiny_llama):
    return load(ModelRef(model=str(tiny_gpt2 if request.param == "gpt2" else tiny_llama)))


def _assert_same(a, b):
    assert a.tokens == b.tokens and a.forwards == b.forwards
    for x, y in zip(a.logits, b.logits, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_without_edits_the_kv_cache_path_equals_recomputation(lm):
    ids = lm.tokenizer(PROMPT).input_ids
    cached = continue_greedy(lm, ids, 12, stop_at_eos=False, incremental=True)
    recomputed = continue_greedy(lm, ids, 12, stop_at_eos=False)
    assert cached.forwards == 12
    _assert_same(cached, recomputed)


def test_a_step_independent_positionwise_clamp_is_exact_on_the_kv_cache_path(lm):
    """A neuron clamped at every position in every forward: the cache holds each position as it was
    computed with the clamp, which is what recomputation computes again."""
    ids = lm.tokenizer(PROMPT).input_ids

    def clamp(act, site):
        act = act.clone()
        act[..., 3] = 6.0
        return act

    def context(_k):
        return hooked(lm.model, lm.adapter, {"blocks.0.mlp.hook_post": clamp})

    cached = continue_greedy(lm, ids, 10, context_for=context, stop_at_eos=False, incremental=True)
    recomputed = continue_greedy(lm, ids, 10, context_for=context, stop_at_eos=False)
    _assert_same(cached, recomputed)
    baseline = continue_greedy(lm, ids, 10, stop_at_eos=False)
    assert any((x - y).abs().max() > 1e-4 for x, y in zip(cached.logits, baseline.logits, strict=True))


def test_teacher_forcing_reads_the_same_predictions_on_both_paths(lm):
    ids = lm.tokenizer(PROMPT).input_ids
    forced = lm.tokenizer("the cat is red").input_ids
    once = continue_greedy(lm, ids, 0, forced=forced, incremental=True)
    every = continue_greedy(lm, ids, 0, forced=forced)
    assert once.forwards == 1 and every.forwards == len(forced)     # the cached path: one forward for all steps
    once.forwards = every.forwards
    _assert_same(once, every)


def test_hooks_on_the_kv_cache_path_are_told_where_their_tokens_sit(lm):
    """context_at(k, start): forward 0 starts at 0 and feeds the prompt, forward k >= 1 feeds one token
    at position len(prompt) + k - 1; recomputation always starts at 0 and feeds everything."""
    ids = lm.tokenizer(PROMPT).input_ids
    seen = {True: [], False: []}

    def context(incremental):
        def at(k, start):
            def rec(act, site):
                seen[incremental].append((k, start, act.shape[1]))
            return hooked(lm.model, lm.adapter, {"blocks.0.hook_resid_pre": rec})
        return at

    for incremental in (True, False):
        continue_greedy(lm, ids, 4, context_at=context(incremental), stop_at_eos=False, incremental=incremental)
    n = len(ids)
    assert seen[True] == [(0, 0, n), (1, n, 1), (2, n + 1, 1), (3, n + 2, 1)]
    assert seen[False] == [(k, 0, n + k) for k in range(4)]


def test_masked_models_always_recompute(tiny_bert):
    lm = load(ModelRef(model=str(tiny_bert)))
    ids = lm.tokenizer("paris is the capital of [MASK] .").input_ids
    out = continue_greedy(lm, ids, 3, stop_at_eos=False, incremental=True)
    assert out.forwards == 3 and len(out.tokens) == 3
