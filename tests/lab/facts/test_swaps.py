"""generate_facts checks each corrupt subject's token length per model and suggests same-length subjects."""

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from neurotrace import GenerateFactsRequest, TokenizeRequest, run_generate_facts, run_tokenize
from neurotrace.lab.facts import load_factset, load_pack
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.loading import resolve_source

REAL = ("smollm2-135m-instruct", "gemma-3-270m")


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def spec(facts, models):
    return GenerateFactsRequest(source={"kind": "spec", "spec": {"domain": "toy", "description": "toy",
                                                                 "facts": facts}}, models=models)


def capital(subject, corrupt, target, fid):
    return {"id": fid, "relation": "capital_of", "template": "The capital of {} is", "clean_subject": subject,
            "corrupt_subject": corrupt, "target": target}


def test_a_corrupt_subject_of_another_length_is_reported_with_same_length_suggestions(lab, bpe_model):
    facts = [capital("France", "Burkina Faso", "Paris", "long-swap"), capital("Japan", "Egypt", "Tokyo", "ok")]
    result = run_generate_facts(spec(facts, ["fact-gpt2", str(bpe_model)]), lab=lab)
    [bad] = result.swap_mismatches
    assert bad.fact_id == "long-swap" and bad.corrupt_subject == "Burkina Faso"
    assert bad.tokens["fact-gpt2"] == [5, 6] and bad.tokens[str(bpe_model)][0] < bad.tokens[str(bpe_model)][1]
    assert [v.n_swap_mismatch for v in result.validation] == [1, 1]
    assert "1 corrupt subject(s) change the prompt's token count" in result.summary and "long-swap" in result.summary
    # suggestions: the geography pack's other capitals (not France, its own corrupt, nor a Paris answer) ...
    assert bad.suggestions and not {"France", "Burkina Faso"} & set(bad.suggestions)
    # ... each as long as the clean prompt in both models, measured by the tokenize tool
    texts = ["The capital of France is", *(f"The capital of {s} is" for s in bad.suggestions)]
    counts = run_tokenize(TokenizeRequest(texts=texts, models=["fact-gpt2", str(bpe_model)]), lab=lab).counts
    assert all(len(set(c)) == 1 for c in counts.values()), counts


def test_same_length_swaps_are_said_to_work(lab):
    result = run_generate_facts(GenerateFactsRequest(source={"kind": "pack", "domains": ["geography"]},
                                                     models=["fact-gpt2"]), lab=lab)
    assert result.swap_mismatches == [] and "subject swap works" in result.summary


def test_real_models_flag_the_swaps_their_tokenizers_break_and_no_other(lab):
    if not all(catalog.is_installed(m) for m in REAL):
        pytest.skip("needs the catalog models " + ", ".join(REAL))
    result = run_generate_facts(GenerateFactsRequest(source={"kind": "pack", "domains": ["known-facts"]},
                                                     models=list(REAL), multi_token="first_token"), lab=lab)
    flagged = {m.fact_id: m for m in load_factset(lab, result.run_id).swap_mismatches}   # the reply lists 5
    assert result.swap_mismatches == list(flagged.values())[:5] and "all in dataset.json" in result.summary
    for model in REAL:     # the reference: the tokenizers library on the model's own tokenizer.json
        ref = Tokenizer.from_file(str(Path(resolve_source(model)) / "tokenizer.json"))
        for fact in load_pack("known-facts").facts:
            clean, swap = (len(ref.encode(fact.prompt(s), add_special_tokens=False).ids)
                           for s in (fact.clean_subject, fact.corrupt_subject))
            assert (clean != swap) == (model in getattr(flagged.get(fact.id), "tokens", {})), (model, fact.id)
            for s in flagged[fact.id].by_model.get(model, []) if fact.id in flagged else []:
                assert len(ref.encode(fact.prompt(s), add_special_tokens=False).ids) == clean
    assert len(flagged) >= 3 and any(m.by_model for m in flagged.values())
