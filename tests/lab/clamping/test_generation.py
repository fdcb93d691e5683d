"""Batched, KV-cached, per-row clamped generation: equal to model.generate, clamps where it says."""

import pytest
import torch

from neurotrace.lab.clamping.generation import ClampRows, Sampler, generate, left_pad, reference_generate
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.seeding import make_generator

PROMPTS = ["the cat", "paris is the capital of", "a", "the king of france lives in the city of rome and"]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request, tiny_gpt2, tiny_llama):
    path = tiny_gpt2 if request.param == "gpt2" else tiny_llama
    return load(ModelRef(model=str(path)))


def _ids(lm):
    return [lm.tokenizer(p).input_ids for p in PROMPTS]


def _rows(lm, values, layer=1, index=5):
    """Every prompt x value; returns (token lists, ClampRows, row labels)."""
    seqs, masks, vals, labels = [], [], [], []
    for i, ids in enumerate(_ids(lm)):
        for v in values:
            seqs.append(ids)
            m = torch.zeros(lm.d_mlp, dtype=torch.bool)
            if v is not None:
                m[index] = True
            masks.append(m)
            vals.append(0.0 if v is None else v)
            labels.append((i, v))
    return seqs, ClampRows({layer: torch.stack(masks)}, torch.tensor(vals)), labels


def test_left_pad_right_aligns_and_masks():
    ids, mask = left_pad([[5, 6, 7], [9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("position", ["all", "last"])
def test_every_row_equals_a_single_generate_call_with_a_hook(lm, position):
    values = [None, 0.0, 4.0, -8.0]
    seqs, clamps, labels = _rows(lm, values)
    ids, mask = left_pad(seqs, 0)
    out = generate(lm.model, lm.adapter, ids, mask, max_new_tokens=10, clamps=clamps, position=position,
                   eos_token_id=0, pad_token_id=0)
    prompt_ids = _ids(lm)
    outputs = {}
    for r, (i, v) in enumerate(labels):
        mine = out.tokens[r, : int(out.lengths[r])].tolist()
        ref = reference_generate(lm.model, lm.adapter, prompt_ids[i], max_new_tokens=10,
                                 neurons=None if v is None else {1: [5]}, value=v, position=position,
                                 eos_token_id=0, pad_token_id=0)
        assert mine == ref, (i, v)
        outputs[(i, v)] = mine
    # the clamp matters: some clamped output differs from its baseline
    assert any(outputs[(i, v)] != outputs[(i, None)] for i, v in labels if v is not None)


def test_baseline_rows_equal_plain_generate_without_any_hook(lm):
    seqs = _ids(lm)
    ids, mask = left_pad(seqs, 0)
    out = generate(lm.model, lm.adapter, ids, mask, max_new_tokens=12, eos_token_id=0, pad_token_id=0)
    for r, prompt in enumerate(seqs):
        x = torch.tensor([prompt])
        with torch.no_grad():
            ref = lm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False,
                                    eos_token_id=0, pad_token_id=0)
        assert out.tokens[r, : int(out.lengths[r])].tolist() == ref[0, len(prompt):].tolist()


def _observed(lm, position):
    seqs, clamps, labels = _rows(lm, [None, 7.5])
    ids, mask = left_pad(seqs, 0)
    seen = []

    def observe(layer, step, before, after):
        if layer == 1:
            seen.append((step, before.clone(), after.clone()))

    generate(lm.model, lm.adapter, ids, mask, max_new_tokens=4, clamps=clamps, position=position,
             observe=observe)
    return mask, labels, seen


@pytest.mark.parametrize("position", ["all", "last"])
def test_the_hooked_activation_holds_the_value_exactly_where_asked(lm, position):
    mask, labels, seen = _observed(lm, position)
    clamped_rows = torch.tensor([v is not None for _, v in labels])
    assert [s for s, _, _ in seen] == [0, 1, 2, 3]
    for step, before, after in seen:
        at = after[:, :, 5]
        others = torch.ones(after.shape[-1], dtype=torch.bool)
        others[5] = False
        assert torch.equal(after[:, :, others], before[:, :, others])       # other neurons untouched
        assert torch.equal(after[~clamped_rows], before[~clamped_rows])     # baseline rows untouched
        if step == 0:
            where = mask.bool().clone()
            if position == "last":
                where[:, :-1] = False
        else:
            assert after.shape[1] == 1                                        # only the newest position
            where = torch.ones(after.shape[:2], dtype=torch.bool)
        target = where & clamped_rows[:, None]
        assert torch.all(at[target] == 7.5)
        assert torch.equal(at[~target], before[:, :, 5][~target])
        if step == 0 and position == "last":
            assert (target.sum(1)[clamped_rows] == 1).all()                   # prompt: final token only


def test_greedy_is_deterministic_and_sampling_is_deterministic_per_seed(lm):
    seqs, clamps, _ = _rows(lm, [None, 3.0])
    ids, mask = left_pad(seqs, 0)

    def run(sampler):
        return generate(lm.model, lm.adapter, ids, mask, max_new_tokens=8, clamps=clamps, sampler=sampler).tokens

    assert torch.equal(run(Sampler()), run(Sampler()))
    a = run(Sampler(1.5, 20, make_generator(7)))
    b = run(Sampler(1.5, 20, make_generator(7)))
    c = run(Sampler(1.5, 20, make_generator(8)))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_top_k_one_sampling_is_greedy(lm):
    seqs, clamps, _ = _rows(lm, [None, 3.0])
    ids, mask = left_pad(seqs, 0)
    greedy = generate(lm.model, lm.adapter, ids, mask, max_new_tokens=6, clamps=clamps).tokens
    top1 = generate(lm.model, lm.adapter, ids, mask, max_new_tokens=6, clamps=clamps,
                    sampler=Sampler(0.7, 1, make_generator(0))).tokens
    assert torch.equal(greedy, top1)


def test_rows_stop_at_eos_and_are_padded_after_it(lm):
    seqs = _ids(lm)
    ids, mask = left_pad(seqs, 0)
    free = generate(lm.model, lm.adapter, ids, mask, max_new_tokens=6)
    row = free.tokens[0].tolist()
    step = max(j for j in range(6) if row[j] not in row[:j])      # row 0 first emits this token here
    eos = row[step]
    out = generate(lm.model, lm.adapter, ids, mask, max_new_tokens=6, eos_token_id=eos, pad_token_id=1)
    assert int(out.lengths[0]) == step + 1 and out.tokens[0, : step + 1].tolist() == row[: step + 1]
    assert out.tokens[0, step + 1:].tolist() == [1] * (5 - step)


def test_recorded_means_count_real_positions_and_see_the_clamp(lm):
    seqs, clamps, labels = _rows(lm, [None, 2.5])
    ids, mask = left_pad(seqs, 0)
    out = generate(lm.model, lm.adapter, ids, mask, max_new_tokens=5, clamps=clamps, record_layers=[1])
    lengths = torch.tensor([len(s) for s in seqs])
    assert torch.equal(out.act_count, lengths + 4)                  # prompt + the 4 fed-back tokens
    mean = out.act_sum[1] / out.act_count[:, None]
    for r, (_, v) in enumerate(labels):
        if v is not None:
            assert float(mean[r, 5]) == pytest.approx(2.5)


def test_chunked_unembedding_and_the_plain_forward_pick_the_same_tokens(lm, monkeypatch):
    from neurotrace.lab.clamping import generation

    assert generation.plain_head(lm.model, lm.adapter) is not None       # the fast path is the one tested
    seqs, clamps, labels = _rows(lm, [None, 6.0])
    ids, mask = left_pad(seqs, 0)
    monkeypatch.setattr(generation, "HEAD_CHUNK", 7)
    chunked = generate(lm.model, lm.adapter, ids, mask, max_new_tokens=8, clamps=clamps)
    monkeypatch.setattr(generation, "plain_head", lambda model, adapter: None)
    plain = generate(lm.model, lm.adapter, ids, mask, max_new_tokens=8, clamps=clamps)
    assert torch.equal(chunked.tokens, plain.tokens)
    prompt_ids = _ids(lm)
    for r, (i, v) in enumerate(labels):
        ref = reference_generate(lm.model, lm.adapter, prompt_ids[i], max_new_tokens=8,
                                 neurons=None if v is None else {1: [5]}, value=v)
        assert chunked.tokens[r].tolist() == ref


def test_last_mode_shared_prefill_equals_the_per_row_prefill_and_model_generate(lm):
    """Without one-token prompts every prompt's prefix is shared across its sweep values; outputs,
    recorded activation means and counts equal the unshared prefill, and each row equals generate."""
    prompts = [p for p in PROMPTS if len(p.split()) > 1]
    prompt_ids = [lm.tokenizer(p).input_ids for p in prompts]
    values = [None, 0.0, 4.0, -8.0]
    seqs = [ids for ids in prompt_ids for _ in values]
    masks = torch.zeros(len(seqs), lm.d_mlp, dtype=torch.bool)
    masks[[r for r in range(len(seqs)) if values[r % len(values)] is not None], 5] = True
    clamps = ClampRows({1: masks}, torch.tensor([0.0 if v is None else v for v in values] * len(prompts)))
    ids, mask = left_pad(seqs, 0)

    def run(share):
        return generate(lm.model, lm.adapter, ids, mask, max_new_tokens=8, clamps=clamps, position="last",
                        eos_token_id=0, pad_token_id=0, record_layers=[0, 1], share_prefill=share)

    shared, plain = run(True), run(False)
    assert torch.equal(shared.tokens, plain.tokens) and torch.equal(shared.act_count, plain.act_count)
    for layer in (0, 1):
        torch.testing.assert_close(shared.act_sum[layer], plain.act_sum[layer], rtol=1e-6, atol=1e-6)
    for r, seq in enumerate(seqs):
        v = values[r % len(values)]
        ref = reference_generate(lm.model, lm.adapter, seq, max_new_tokens=8, neurons=None if v is None else {1: [5]},
                                 value=v, position="last", eos_token_id=0, pad_token_id=0)
        assert shared.tokens[r, : int(shared.lengths[r])].tolist() == ref


def test_should_stop_ends_the_batch_after_the_current_step(lm):
    ids, mask = left_pad(_ids(lm), 0)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 3

    out = generate(lm.model, lm.adapter, ids, mask, max_new_tokens=10, should_stop=stop)
    assert len(calls) == 3
    assert (out.lengths == 3).all() and (out.tokens[:, 3:] == 0).all()
