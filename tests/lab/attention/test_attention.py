"""attention: a head planted to attend to the previous token scores highest, patterns equal TransformerLens'
hook_pattern on the bridge, GQA and sliding-window layers are read right, and the eager switch is undone."""

import math

import numpy as np
import pytest
import torch

from neurotrace.lab.attention import AttentionRequest, run_attention
from neurotrace.lab.attention.figures import FIGURES
from neurotrace.lab.attention.patterns import attention_patterns, repeated_sequence, sequence_scores
from neurotrace.lab.attention.schema import RESULTS_FILE, AttentionResults
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.records import assert_redraws, read_back
from neurotrace.testing.tiny import build_tiny, tiny_tokenizer

PROMPT = "the capital of france is"


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


@pytest.fixture(scope="module")
def previous_token_model(tmp_path_factory):
    """A tiny GPT-2 whose head 0:1 attends to the previous token by construction.

    Positions are embedded as a rotation (cos p.theta, sin p.theta) in dims 0..3 (with the opposite sign in
    dims 2..3, so LayerNorm's mean removal leaves them alone) and dominate the small token embeddings. Head 1
    of layer 0 reads keys as that rotation and queries as the rotation turned back one step, so the score
    q_i . k_j = s cos((i - 1 - j) theta) peaks at j = i - 1.
    """
    from transformers import GPT2LMHeadModel

    path = build_tiny("gpt2", tmp_path_factory.mktemp("prev") / "m", seed=0)
    model = GPT2LMHeadModel.from_pretrained(path)
    theta, d, dh, h = 2 * math.pi / 40, model.config.n_embd, model.config.n_embd // model.config.n_head, 1
    with torch.no_grad():
        p = torch.arange(model.config.n_positions, dtype=torch.float32)
        wpe = torch.zeros_like(model.transformer.wpe.weight)
        wpe[:, 0], wpe[:, 1], wpe[:, 2], wpe[:, 3] = p.mul(theta).cos(), p.mul(theta).sin(), -p.mul(theta).cos(), -p.mul(theta).sin()
        model.transformer.wpe.weight.copy_(wpe * 4)
        model.transformer.wte.weight.mul_(0.05)
        w = model.transformer.h[0].attn.c_attn.weight                   # (d, 3d): q | k | v
        b = model.transformer.h[0].attn.c_attn.bias
        q, k = slice(h * dh, (h + 1) * dh), slice(d + h * dh, d + (h + 1) * dh)
        w[:, q], w[:, k], b[q], b[k] = 0, 0, 0, 0
        c, s = math.cos(theta), math.sin(theta)
        scale = 200.0                                                   # q = scale * R(-theta) x, k = x
        w[0, h * dh], w[1, h * dh], w[0, h * dh + 1], w[1, h * dh + 1] = scale * c, scale * s, -scale * s, scale * c
        w[0, d + h * dh], w[1, d + h * dh + 1] = 1.0, 1.0
    model.save_pretrained(path)
    return path


def test_the_planted_previous_token_head_gets_the_top_previous_token_score(lab, previous_token_model):
    result = run_attention(AttentionRequest(model=str(previous_token_model), prompt=PROMPT), lab=lab)
    best = result.top_heads["previous_token"][0]
    assert best.head == "0:1" and best.score > 0.9
    assert result.top_heads["previous_token"][1].score < 0.8
    focus = next(f for f in result.last_position if f.head == "0:1")
    assert focus.sources[0].position == len(result.tokens) - 2 and focus.sources[0].token == "france"


def test_patterns_equal_transformerlens_hook_pattern_on_the_bridge(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2), backend="bridge"))
    ids = lm.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    ours = attention_patterns(load(ModelRef(model=str(tiny_gpt2))), ids[0])
    _, cache = lm.bridge.run_with_cache(ids)
    tl = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0] for layer in range(lm.n_layers)])
    torch.testing.assert_close(ours, tl.float(), atol=1e-5, rtol=1e-5)


def test_scores_read_the_right_diagonals_of_a_hand_made_pattern():
    n, offset = 3, 1
    size = offset + 2 * n
    prev = torch.zeros(size, size)
    prev[0, 0] = 1
    prev[torch.arange(1, size), torch.arange(size - 1)] = 1
    induction = torch.eye(size)
    second = torch.arange(n) + offset + n
    induction[second] = 0
    induction[second, second - n + 1] = 1
    scores = sequence_scores(torch.stack([prev, induction])[None], n, offset)   # (1 layer, 2 heads)
    assert scores["previous_token"].tolist() == [[1.0, 0.0]]
    assert scores["induction"][0, 1] == 1.0 and scores["duplicate_token"].max() == 0.0


@pytest.fixture(scope="module")
def gqa_window_model(tmp_path_factory):
    """A tiny Mistral with grouped-query attention (4 query heads, 2 key/value heads) and a window of 3."""
    from transformers import MistralConfig, MistralForCausalLM

    out = tmp_path_factory.mktemp("gqa") / "m"
    tok = tiny_tokenizer("causal")
    torch.manual_seed(0)
    MistralForCausalLM(MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, sliding_window=3,
                                     max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
                                     pad_token_id=0)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_gqa_gives_one_pattern_per_query_head_and_the_sliding_window_is_respected(gqa_window_model):
    lm = load(ModelRef(model=str(gqa_window_model)))
    before = lm.model.config._attn_implementation
    ids = lm.tokenizer("the cat is big and the dog is small", return_tensors="pt")["input_ids"][0]
    with torch.no_grad():
        logits = lm.model(input_ids=ids[None]).logits
    pattern = attention_patterns(lm, ids)
    n = len(ids)
    assert pattern.shape == (2, 4, n, n)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 4, n))
    q, k = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    assert pattern[..., (q - k >= 3) | (k > q)].abs().max() == 0.0
    assert pattern[..., (q - k < 3) & (k <= q)].min() > 0.0
    assert lm.model.config._attn_implementation == before
    with torch.no_grad():
        torch.testing.assert_close(lm.model(input_ids=ids[None]).logits, logits)


def test_llama_gqa_patterns_equal_transformerlens_on_the_bridge(gqa_window_model, tmp_path):
    lm = load(ModelRef(model=str(gqa_window_model), backend="bridge"))
    ids = lm.tokenizer("the cat is big", return_tensors="pt")["input_ids"]
    _, cache = lm.bridge.run_with_cache(ids)
    tl = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0] for layer in range(lm.n_layers)])
    ours = attention_patterns(load(ModelRef(model=str(gqa_window_model))), ids[0])
    torch.testing.assert_close(ours, tl.float(), atol=1e-5, rtol=1e-5)


def test_run_writes_patterns_scores_and_figures_and_scores_the_subject(lab, tiny_gpt2):
    result = run_attention(AttentionRequest(model=str(tiny_gpt2), prompt=PROMPT, subject="france",
                                            heads=["1:*", "0:2"]), lab=lab)
    assert [f.head for f in result.last_position] == ["1:0", "1:1", "1:2", "1:3", "0:2"]
    assert set(result.top_heads) == {"previous_token", "induction", "duplicate_token", "subject"}
    patterns = lab.store.read_npy(result.run_id, "arrays/patterns.npy")
    lm = load(ModelRef(model=str(tiny_gpt2)))
    subj = patterns[:, :, -1, 3]
    assert result.top_heads["subject"][0].score == pytest.approx(float(subj.max()), abs=1e-4)
    assert len(result.figures) == 2 and "attribute" in result.next
    assert patterns.shape[:2] == (lm.n_layers, 4)


def test_repeated_sequence_is_seeded_and_starts_with_bos(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2)))
    a, off = repeated_sequence(lm, 5, 0)
    b, _ = repeated_sequence(lm, 5, 0)
    c, _ = repeated_sequence(lm, 5, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[off:off + 5], a[off + 5:])


def test_bad_heads_and_subject_are_input_errors_naming_the_field(lab, tiny_gpt2):
    with raises_lab_error(InputError) as err:
        run_attention(AttentionRequest(model=str(tiny_gpt2), prompt=PROMPT, heads=["0:1", "5:0"]), lab=lab)
    assert err.value.field == "heads[1]"
    with raises_lab_error(InputError) as err:
        run_attention(AttentionRequest(model=str(tiny_gpt2), prompt=PROMPT, heads=["x"]), lab=lab)
    assert err.value.field == "heads[0]"
    with raises_lab_error(InputError) as err:
        run_attention(AttentionRequest(model=str(tiny_gpt2), prompt=PROMPT, subject="spain"), lab=lab)
    assert err.value.field == "subject"


def test_plot_redraws_an_attention_run(lab, tiny_gpt2):
    from neurotrace.lab.plotting import PlotRequest, run_plot

    run = run_attention(AttentionRequest(model=str(tiny_gpt2), prompt=PROMPT), lab=lab)
    plot = run_plot(PlotRequest(run_id=run.run_id, kind="head_scores"), lab=lab)
    assert plot.kinds == ["head_scores"] and set(plot.available_kinds) == {"pattern_grid", "head_scores"}


def test_a_masked_lm_is_scored_from_its_mask(lab, tiny_bert):
    result = run_attention(AttentionRequest(model=str(tiny_bert), prompt="the capital of france is [MASK] .",
                                            heads=["0:0"], top_k=9), lab=lab)
    patterns = lab.store.read_npy(result.run_id, "arrays/patterns.npy")
    mask = result.tokens.index("[MASK]")
    weights = {s.position: s.weight for s in result.last_position[0].sources}
    assert weights[0] == pytest.approx(float(patterns[0, 0, mask, 0]), abs=1e-4)


def test_the_saved_results_round_trip_through_their_record_and_redraw_the_runs_figures(lab, tiny_gpt2):
    result = run_attention(AttentionRequest(model=str(tiny_gpt2), prompt=PROMPT, subject="france",
                                            heads=["1:0", "0:2"]), lab=lab)
    rec = read_back(lab, result.run_id, RESULTS_FILE, AttentionResults.model_validate)
    patterns = lab.store.read_npy(result.run_id, "arrays/patterns.npy")
    assert rec.shown == [(1, 0), (0, 2)] and rec.last_position == result.last_position
    assert set(rec.scores) == set(result.top_heads)
    np.testing.assert_allclose(np.array(rec.shown_patterns["0:2"]), patterns[0, 2], atol=1e-6)
    assert_redraws(lab, result.run_id, FIGURES, rec)
    grid = FIGURES["pattern_grid"](rec)
    assert [ax.get_title() for ax in grid.axes] == ["head 1:0", "head 0:2"]
    np.testing.assert_array_equal(grid.axes[1].get_images()[0].get_array(), np.array(rec.shown_patterns["0:2"]))


def test_the_summary_names_the_strongest_focus_past_the_attention_sink_and_counts_the_sink_heads():
    from neurotrace.lab.attention.report import _focus_line
    from neurotrace.lab.attention.schema import HeadFocus, Source

    def head(name, *sources):
        return HeadFocus(head=name, sources=[Source(position=p, token=t, weight=w) for p, t, w in sources])

    focus = [head("0:1", (0, "<bos>", 0.9), (3, " Tower", 0.05)),
             head("5:2", (0, "<bos>", 0.5), (2, "iffel", 0.4)),
             head("12:2", (3, " Tower", 0.7), (0, "<bos>", 0.2))]
    text = " ".join(_focus_line(focus))
    assert "head 12:2 on ' Tower' (position 3, 0.70)" in text and "2 of 3 shown heads" in text
    assert _focus_line([head("0:0", (0, "<bos>", 1.0))]) == [
        "1 of 1 shown heads put most weight on position 0 (the attention sink)."]
