"""logit_lens: the last row is the model's output, rows equal TransformerLens' logit lens on its bridge,
the tuned lens never does worse on the final row and beats the logit lens where the stream is still raw."""

import pytest
import torch

from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.lens import LogitLensRequest, run_logit_lens
from neurotrace.lab.lens.figures import FIGURES
from neurotrace.lab.lens.lens import read_out, residual_rows
from neurotrace.lab.lens.schema import RESULTS_FILE, LogitLensResults, TunedReport
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.records import assert_redraws, read_back

PROMPT = "the capital of france is"


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama", "tiny_bert"])
def test_the_last_row_of_the_lens_is_the_models_own_output(fixture, request):
    lm = load(ModelRef(model=str(request.getfixturevalue(fixture))))
    ids = lm.tokenizer(PROMPT, return_tensors="pt")["input_ids"][0]
    rows = residual_rows(lm, ids)
    assert rows.shape == (lm.n_layers + 1, len(ids), lm.d_model)
    with torch.no_grad():
        logits = lm.model(input_ids=ids[None]).logits[0]
    torch.testing.assert_close(read_out(lm, rows[-1]), logits, atol=1e-4, rtol=1e-4)


def test_every_row_equals_transformerlens_logit_lens_on_the_bridge(tiny_gpt2):
    from transformer_lens.tools.analysis.logit_lens import logit_lens

    lm = load(ModelRef(model=str(tiny_gpt2), backend="bridge"))
    ids = lm.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    ours = read_out(lm, residual_rows(lm, ids[0]))                     # (rows, pos, vocab)
    _, cache = lm.bridge.run_with_cache(ids)
    tl = logit_lens(cache, positions=None)
    assert tl.labels == ["0_pre", "1_pre", "final_post"]
    torch.testing.assert_close(ours, tl.values[:, 0].float(), atol=1e-4, rtol=1e-4)
    # the same numbers by hand: accumulated_resid + ln_final (recomputed) + unembed
    stack = cache.accumulated_resid(apply_ln=False)
    by_hand = lm.bridge.unembed(lm.bridge.ln_final(stack[:, 0]))
    torch.testing.assert_close(ours, by_hand, atol=1e-4, rtol=1e-4)


def test_the_run_reports_p_target_per_row_and_readable_top_tokens(lab, tiny_gpt2):
    result = run_logit_lens(LogitLensRequest(model=str(tiny_gpt2), prompt=PROMPT, target="paris", top_k=3), lab=lab)
    lm = load(ModelRef(model=str(tiny_gpt2)))
    ids = lm.tokenizer(PROMPT, return_tensors="pt")["input_ids"][0]
    probs = torch.softmax(read_out(lm, residual_rows(lm, ids)), -1)
    paris = lm.tokenizer.convert_tokens_to_ids("paris")
    assert result.target_id == paris and result.rows[0] == "embed" and len(result.rows) == lm.n_layers + 1
    assert result.p_target == pytest.approx(probs[:, -1, paris].tolist(), abs=1e-6)
    assert len(result.top_last[0]) == 3 and len(result.figures) == 2
    assert "attribute" in result.next and lab.store.manifest(result.run_id).status == "complete"
    rec = lab.store.read_json(result.run_id, "logit_lens_results.json")
    assert len(rec["top_tokens"]) == lm.n_layers + 1 and len(rec["top_tokens"][0]) == len(ids)


@pytest.fixture(scope="module")
def bpe_gpt2(tmp_path_factory, gpt2_tokenizer_dir):
    """A tiny random GPT-2 with the real byte-level BPE tokenizer (50257 tokens)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("bpe-lens") / "gpt2-bpe"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=32)).save_pretrained(out)
    AutoTokenizer.from_pretrained(gpt2_tokenizer_dir).save_pretrained(out)
    return out


def test_gpt2_token_text_is_decoded_not_byte_level(lab, bpe_gpt2):
    result = run_logit_lens(LogitLensRequest(model=str(bpe_gpt2), prompt="The capital of France is",
                                             target="Paris"), lab=lab)
    assert result.target == " Paris"
    assert result.tokens[1] == " capital" and not any("Ġ" in t for t in result.tokens)
    rec = lab.store.read_json(result.run_id, "logit_lens_results.json")
    assert not any("Ġ" in t for row in rec["top_tokens"] for cell in row for t in cell)


def test_the_tuned_lens_is_exact_on_the_final_row_and_beats_the_logit_lens_at_the_embeddings(lab):
    prompts = ["The capital of Spain is", "The official language of France is", "Paris is located in",
               "The capital of Japan is", "The currency of Japan is the"]
    result = run_logit_lens(LogitLensRequest(model="fact-gpt2", prompt="The capital of France is", tuned=True,
                                             fit_prompts=prompts, ridge=1.0), lab=lab)
    t = result.tuned
    assert t is not None and t.n_heldout >= 1 and t.n_train > t.n_heldout
    assert t.kl_tuned[-1] == pytest.approx(0.0, abs=1e-4) and t.kl_logit_lens[-1] == pytest.approx(0.0, abs=1e-4)
    assert t.kl_tuned[0] < t.kl_logit_lens[0]
    assert len(t.p_target) == len(result.rows)


def test_same_seed_gives_the_same_held_out_split(lab):
    req = LogitLensRequest(model="fact-gpt2", prompt="The capital of France is", tuned=True,
                           fit_prompts=["The capital of Spain is", "Paris is located in"], seed=1)
    a, b = (run_logit_lens(req, lab=lab).tuned for _ in range(2))
    assert a == b


def test_too_few_fitting_states_is_an_input_error_naming_fit_prompts(lab, tiny_gpt2):
    with raises_lab_error(InputError) as err:
        run_logit_lens(LogitLensRequest(model=str(tiny_gpt2), prompt="the cat", tuned=True), lab=lab)
    assert err.value.field == "fit_prompts"
    with raises_lab_error(InputError) as err:
        run_logit_lens(LogitLensRequest(model=str(tiny_gpt2), prompt=PROMPT, target="   "), lab=lab)
    assert err.value.field == "target"


def test_plot_redraws_a_logit_lens_run(lab, tiny_gpt2):
    from neurotrace.lab.plotting import PlotRequest, run_plot

    run = run_logit_lens(LogitLensRequest(model=str(tiny_gpt2), prompt=PROMPT), lab=lab)
    plot = run_plot(PlotRequest(run_id=run.run_id), lab=lab)
    assert set(plot.kinds) == {"top_tokens", "target_curve"} and len(plot.figures) == 2


def test_a_masked_lm_is_read_at_its_mask(lab, tiny_bert):
    result = run_logit_lens(LogitLensRequest(model=str(tiny_bert), prompt="the capital of france is [MASK] ."), lab=lab)
    assert result.tokens[result.scored_position] == "[MASK]" and result.scored_position < len(result.tokens) - 1


def test_the_saved_results_round_trip_through_their_record_and_redraw_the_runs_figures(lab):
    result = run_logit_lens(LogitLensRequest(model="fact-gpt2", prompt="The capital of France is", tuned=True,
                                             fit_prompts=["The capital of Spain is", "Paris is located in"]), lab=lab)
    rec = read_back(lab, result.run_id, RESULTS_FILE, LogitLensResults.model_validate)
    assert isinstance(rec.tuned, TunedReport) and rec.tuned == result.tuned
    assert [row[rec.scored_position] for row in rec.p_target] == result.p_target
    assert [row[rec.scored_position] for row in rec.top_tokens] == result.top_last
    assert_redraws(lab, result.run_id, FIGURES, rec)
    curve = FIGURES["target_curve"](rec)
    lens, tuned = curve.axes[0].get_lines()
    assert list(lens.get_ydata()) == result.p_target and list(tuned.get_ydata()) == rec.tuned.p_target


def test_the_first_top1_row_is_an_index_and_the_layer_is_named_apart(lab):
    result = run_logit_lens(LogitLensRequest(model="fact-gpt2", prompt="The capital of France is", target="Paris"),
                            lab=lab)
    row, layer = result.first_top1_row, result.first_top1_layer
    assert row is not None and row > 0 and layer == row - 1
    assert result.rows[row] == f"block {layer}" and result.rows[0] == "embed"
    assert f"after layer {layer}'s block (row {row}" in result.summary
