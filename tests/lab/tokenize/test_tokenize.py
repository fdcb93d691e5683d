"""tokenize: token ids, pieces and counts per model from the tokenizer files alone, as the tools tokenize."""

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from neurotrace import LogitLensRequest, run_logit_lens
from neurotrace.lab.errors import InputError, NotFound
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.loading import resolve_source
from neurotrace.lab.tokenize import TokenizeRequest, run_tokenize
from neurotrace.lab.tokenize.run import MIN_SHOWN
from neurotrace.lab.tokenize.schema import TABLE_FILE, TokenTable
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.records import read_back

GEMMA = "gemma-3-270m"


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def needs(name: str) -> None:
    if not catalog.is_installed(name):
        pytest.skip(f"install it with `neurotrace models fetch {name}`")


def test_word_level_counts_unknown_words_and_matches_the_tools_positions(lab):
    texts = ["The capital of France is", "The Eiffel Tower is in"]
    result = run_tokenize(TokenizeRequest(texts=texts, models=["fact-gpt2"]), lab=lab)
    first, second = result.rows
    assert result.counts == {"fact-gpt2": [5, 5]}
    assert first.tokens == ["The", "capital", "of", "France", "is"] and first.n_unknown == 0
    assert second.n_unknown == 2 and "unknown" in result.summary          # 'Eiffel', 'Tower' not in its words
    assert lab.cache.listing() == []                                       # no weights were loaded
    lens = run_logit_lens(LogitLensRequest(model="fact-gpt2", prompt=texts[0]), lab=lab)
    assert lens.tokens == first.tokens                                     # position i here = position i there


def test_bos_and_ids_match_the_reference_tokenizer_file_and_adapters_share_the_base(lab):
    needs(GEMMA)
    text = "The Eiffel Tower is located in the city of"
    result = run_tokenize(TokenizeRequest(texts=[text], models=[GEMMA, f"{GEMMA}+eiffel-rome-lora"]), lab=lab)
    plain = run_tokenize(TokenizeRequest(texts=[text], models=[GEMMA], special_tokens=False), lab=lab)
    reference = Tokenizer.from_file(str(Path(resolve_source(GEMMA)) / "tokenizer.json")).encode(text)
    base, tuned = result.rows
    assert base.ids == reference.ids and base.tokens[0] == "<bos>"
    assert tuned.ids == base.ids and result.counts[f"{GEMMA}+eiffel-rome-lora"] == [base.n_tokens]
    assert plain.rows[0].ids == base.ids[1:]                              # special_tokens=false: no BOS
    assert lab.cache.listing() == []


def test_an_unknown_adapter_or_model_names_its_index(lab):
    with raises_lab_error(NotFound) as err:
        run_tokenize(TokenizeRequest(texts=["a"], models=["fact-gpt2", "fact-gpt2+no-such-adapter"]), lab=lab)
    assert err.value.field == "models[1]"
    with raises_lab_error(NotFound) as err:
        run_tokenize(TokenizeRequest(texts=["a"], models=["./no/such/dir"]), lab=lab)
    assert err.value.field == "models[0]"


def test_chat_template_is_applied_and_a_model_without_one_names_the_text(lab):
    needs("smollm2-135m-instruct")
    messages = [{"role": "user", "content": "Hi"}]
    result = run_tokenize(TokenizeRequest(texts=["Hi", messages], models=["smollm2-135m-instruct"], chat=True),
                          lab=lab)
    a, b = result.rows
    assert a.ids == b.ids and "<|im_start|>" in a.tokens and a.n_tokens > 5
    with raises_lab_error(InputError) as err:
        run_tokenize(TokenizeRequest(texts=[messages], models=["fact-gpt2"]), lab=lab)
    assert err.value.field == "texts[0]" and "chat template" in err.value.message


def test_large_tables_are_cut_in_the_reply_and_whole_in_tokens_json(lab):
    long = " ".join(["the capital of france is paris"] * 40)
    result = run_tokenize(TokenizeRequest(texts=[long] * 60, models=["fact-gpt2"]), lab=lab)
    row = result.rows[0]
    assert row.n_tokens == 240 and row.shown == MIN_SHOWN == len(row.ids) == len(row.tokens)
    assert 1 <= len(result.rows) < 60 and result.counts["fact-gpt2"] == [240] * 60
    assert f"first {MIN_SHOWN} tokens" in result.summary and "of 60 (model, text) rows" in result.summary
    assert len(result.model_dump_json()) < 8000 and result.table_uri in result.artifacts
    table = read_back(lab, result.run_id, TABLE_FILE, TokenTable.model_validate)
    assert len(table.rows) == 60 and len(table.rows[0].ids) == 240 and table.texts["fact-gpt2"][0] == long
    with raises_lab_error(InputError) as err:
        TokenizeRequest(texts=["ok", "x" * 20_001], models=["fact-gpt2"])
    assert err.value.field == "texts[1]"
