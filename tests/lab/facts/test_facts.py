"""generate_facts core: every validation error by field, spec/ROME/drafted imports, token policies."""

import json
import shutil
from pathlib import Path

import pytest

from neurotrace import GenerateFactsRequest, run_generate_facts
from neurotrace.lab.errors import InputError, NotFound
from neurotrace.lab.facts.generate import (
    CONFIG_FILE,
    DATASET_FILE,
    FactSet,
    GenerateFactsRunConfig,
    build_factset,
    load_dataset,
)
from neurotrace.lab.facts.packs import WORLD_PACKS, list_packs
from neurotrace.lab.facts.sources import extract_json_list, parse_drafted
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.records import read_back

CAPITAL = {"template": "the capital of {} is", "clean_subject": "france", "corrupt_subject": "italy",
           "target": "paris", "context_from": "capital", "context_to": "language"}


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs", input_dirs=(tmp_path,)))  # files here may be read


def spec_request(facts, models=(), **extra):
    spec = {"domain": "toy", "description": "toy facts", "facts": facts, **extra}
    return GenerateFactsRequest(source={"kind": "spec", "spec": spec}, models=list(models))


def build(lab, request, **kw):
    return build_factset(request, lab=lab, reporter=NULL_REPORTER, **kw)


def field_of(lab, request, **kw) -> str:
    with raises_lab_error(InputError) as info:
        build(lab, request, **kw)
    return info.value.field


@pytest.fixture(scope="module")
def bert_without_mask(tmp_path_factory, tiny_bert) -> Path:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("nomask") / "bert"
    shutil.copytree(tiny_bert, out)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(str(tiny_bert / "tokenizer.json")),
                                  unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / name).unlink(missing_ok=True)
    tok.save_pretrained(out)
    return out


# -- structural errors, by field ------------------------------------------------------------------

@pytest.mark.parametrize(("change", "field"), [
    ({"template": "the capital of {} is {}"}, "facts[1].template"),
    ({"template": "the capital of france is"}, "facts[1].template"),
    ({"context_from": "river"}, "facts[1].context_from"),
    ({"context_from": None}, "facts[1].context_to"),
    ({"corrupt_subject": " france "}, "facts[1].corrupt_subject"),
    ({"target": None}, "facts[1].target"),
    ({"colour": "red"}, "facts[1].colour"),
])
def test_invalid_spec_fact_is_an_input_error_naming_index_and_field(lab, change, field):
    bad = {k: v for k, v in {**CAPITAL, **change}.items() if v is not None}
    assert field_of(lab, spec_request([CAPITAL, bad])) == field


def test_a_fact_that_is_not_an_object_names_its_index(lab):
    assert field_of(lab, spec_request([CAPITAL, "france -> paris"])) == "facts[1]"


def test_repeated_fact_ids_are_rejected(lab):
    assert field_of(lab, spec_request([{**CAPITAL, "id": "a"}, {**CAPITAL, "id": "a"}])) == "facts[1].id"


def test_unknown_pack_names_the_domain_field(lab):
    assert field_of(lab, GenerateFactsRequest(source={"kind": "pack", "domains": "astrology"}, models=[])) == "domain"


def test_every_built_in_pack_passes_structural_validation(lab):
    fs = build(lab, GenerateFactsRequest(source={"kind": "pack", "domains": list_packs()}, models=[]))
    assert len(fs.facts) >= 6 * 8 and len({f.id for f in fs.facts}) == len(fs.facts)


# -- token checks -----------------------------------------------------------------------------------

def test_targets_are_checked_against_causal_and_masked_tokenizers(lab, tiny_gpt2, tiny_bert):
    fs = build(lab, spec_request([CAPITAL], [str(tiny_gpt2), str(tiny_bert)]))
    assert [(r.lm_kind, r.n_ok, r.checks[0].target_tokens) for r in fs.validation] == [
        ("causal", 1, ["paris"]), ("masked", 1, ["paris"])]
    assert fs.validation[1].mask_token == "[MASK]"


def test_target_outside_the_vocabulary_is_rejected(lab, tiny_gpt2):
    request = spec_request([CAPITAL, {**CAPITAL, "target": "Kathmandu"}], [str(tiny_gpt2)])
    with raises_lab_error(InputError, match="not in the vocabulary") as info:
        build(lab, request)
    assert info.value.field == "facts[1].target"


def test_subjects_that_tokenize_identically_are_rejected(lab, tiny_gpt2):
    request = spec_request([{**CAPITAL, "clean_subject": "Atlantis", "corrupt_subject": "Lemuria"}], [str(tiny_gpt2)])
    assert field_of(lab, request) == "facts[0].corrupt_subject"


def test_bpe_target_is_the_leading_space_token(lab, bpe_model):
    fact = {**CAPITAL, "template": "The capital of {} is", "clean_subject": "France", "corrupt_subject": "Japan",
            "target": "Paris", "context_from": None, "context_to": None}
    fs = build(lab, spec_request([{k: v for k, v in fact.items() if v is not None}], [str(bpe_model)]))
    check = fs.validation[0].checks[0]
    assert check.target_tokens == ["\u0120Paris"] and check.ok


def test_multi_token_target_is_an_error_unless_first_token_policy(lab, bpe_model):
    fact = {"template": "The capital of {} is", "clean_subject": "Nepal", "corrupt_subject": "Peru",
            "target": "Kathmandu"}
    with raises_lab_error(InputError, match="3 tokens") as info:
        build(lab, spec_request([fact], [str(bpe_model)]))
    assert info.value.field == "facts[0].target"
    request = spec_request([fact], [str(bpe_model)]).model_copy(update={"multi_token": "first_token"})
    report = build(lab, request).validation[0]
    assert report.n_ok == 1 and report.n_multi_token == 1
    assert report.checks[0].target_tokens[0] == "\u0120Kath" and "first token" in report.checks[0].notes[0]


def test_masked_lm_without_mask_token_is_refused(lab, bert_without_mask):
    with raises_lab_error(InputError, match="no mask token") as info:
        build(lab, spec_request([CAPITAL], [str(bert_without_mask)]))
    assert info.value.field == "models"


def test_missing_model_is_not_found(lab, tmp_path):
    with raises_lab_error(NotFound):
        build(lab, spec_request([CAPITAL], [str(tmp_path / "nowhere")]))


# -- spec import -----------------------------------------------------------------------------------

def test_spec_file_is_imported_with_variants_and_models_recorded(lab, tmp_path, tiny_gpt2):
    spec = {"domain": "toy", "description": "d", "models": [{"name": "bert", "huggingface_id": "bert-base-uncased"}],
            "facts": [CAPITAL, {**CAPITAL, "variants": [{"prefix": "quiz. ", "suffix": ""}]}],
            "variants": [{"prefix": "", "suffix": "."}], "output_dir": "out/toy"}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    result = run_generate_facts(GenerateFactsRequest(source={"kind": "spec", "spec": str(path)},
                                                     models=[str(tiny_gpt2)]), lab=lab, reporter=NULL_REPORTER)
    facts = load_dataset(lab, result.run_id)
    assert [f.id for f in facts] == ["toy/0", "toy/1"]
    assert facts[0].variants[0].suffix == "." and facts[1].variants[0].prefix == "quiz. "
    config = read_back(lab, result.run_id, CONFIG_FILE, GenerateFactsRunConfig.model_validate)
    assert config.source.spec == str(path) and config.models == [str(tiny_gpt2)]


def test_spec_path_errors_name_the_source_field(lab, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with raises_lab_error(NotFound) as info:
        build(lab, GenerateFactsRequest(source={"kind": "spec", "spec": str(tmp_path / "none.json")}, models=[]))
    assert info.value.field == "source.spec"
    assert field_of(lab, GenerateFactsRequest(source={"kind": "spec", "spec": str(bad)}, models=[])) == "source.spec"
    bad.write_text(json.dumps({"domain": "x"}), encoding="utf-8")
    assert field_of(lab, GenerateFactsRequest(source={"kind": "spec", "spec": str(bad)}, models=[])) == "source.spec"


# -- ROME import -----------------------------------------------------------------------------------

def rome(known_id, subject, attribute, relation="P36", template="The capital of {} is"):
    return {"known_id": known_id, "subject": subject, "attribute": attribute, "template": template,
            "prediction": " " + attribute, "prompt": template.format(subject), "relation_id": relation}


ROME = [rome(0, "France", "Paris"), rome(1, "Japan", "Tokyo"), rome(2, "Italy", "Rome"), rome(3, "Peru", "Lima"),
        rome(4, "Vinson Massif", "Antarctica", "P30", "{} is located in the continent of"),
        rome(5, "Cuba", "Havana")]


def rome_request(records, seed=0, **kw):
    return GenerateFactsRequest(source={"kind": "rome", "records": records, **kw}, models=[], seed=seed)


def test_rome_records_map_to_facts_with_corrupt_subject_from_the_same_relation(lab):
    facts = build(lab, rome_request(ROME)).facts
    by_id = {f.id: f for f in facts}
    france = by_id["rome/0"]
    assert (france.template, france.clean_subject, france.target, france.relation) == (
        "The capital of {} is", "France", "Paris", "P36")
    assert france.corrupt_subject in {"Japan", "Italy", "Peru", "Cuba"}
    assert by_id["rome/4"].corrupt_subject is None  # the only P30 record: noise corruption only


def test_rome_corrupt_subjects_are_seeded(lab, tmp_path):
    path = tmp_path / "known_1000.json"
    path.write_text(json.dumps(ROME), encoding="utf-8")
    picks = {s: [f.corrupt_subject for f in build(lab, rome_request(str(path), seed=s)).facts] for s in range(6)}
    assert picks[0] == [f.corrupt_subject for f in build(lab, rome_request(ROME, seed=0)).facts]
    assert len({tuple(p) for p in picks.values()}) > 1


def test_rome_filters_and_errors(lab):
    assert [f.id for f in build(lab, rome_request(ROME, relations=["P36"], limit=2)).facts] == ["rome/0", "rome/1"]
    assert field_of(lab, rome_request(ROME, relations=["P999"])) == "source.relations"
    assert field_of(lab, rome_request([*ROME[:2], {**ROME[2], "prompt": "Rome is in"}])) == "facts[2].prompt"
    assert field_of(lab, rome_request([*ROME[:1], {"known_id": 9, "subject": "x"}])) == "facts[1].attribute"
    assert field_of(lab, rome_request([*ROME[:1], {**ROME[1], "template": "{} {}"}])) == "facts[1].template"


def test_rome_records_must_be_a_list(lab, tmp_path):
    path = tmp_path / "obj.json"
    path.write_text(json.dumps({"records": ROME}), encoding="utf-8")
    assert field_of(lab, rome_request(str(path))) == "source.records"


# -- drafted facts (sampling) ----------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "Here you go:\n```json\n[{\"a\": 1}]\n```\nEnjoy!",
    "Sure. [{\"a\": 1}] That's all.",
    "{\"facts\": [{\"a\": 1}]}",
    "```\n[{\"a\": 1}]\n```",
])
def test_json_list_is_extracted_from_prose_and_fences(text):
    assert extract_json_list(text) == [{"a": 1}]


def test_drafted_facts_are_normalised_and_invalid_ones_dropped():
    items = [{"subject": "france", "answer": " paris", "template": "the capital of {} is", "note": "x"},
             {"clean_subject": "spain", "target": "madrid", "template": "no slot"},
             {"clean_subject": "france", "target": "paris", "template": "the capital of {} is"}]
    facts, dropped, origins = parse_drafted(json.dumps(items), "World Capitals")
    assert origins == [0]
    assert [(f.id, f.clean_subject, f.target) for f in facts] == [("world_capitals/drafted_0", "france", "paris")]
    assert [(d.index, d.field) for d in dropped] == [(1, "template"), (2, "clean_subject")]
    assert "repeats the prompt of #0" in dropped[1].reason


def test_sampling_without_a_client_is_an_input_error_listing_packs(lab):
    request = GenerateFactsRequest(source={"kind": "sampling", "domain": "astronomy"}, models=[])
    with raises_lab_error(InputError, match="cybersecurity") as info:
        build(lab, request)
    assert info.value.field == "source"


def test_sampling_with_only_invalid_drafts_is_an_input_error(lab, tiny_gpt2):
    request = GenerateFactsRequest(source={"kind": "sampling", "domain": "x", "count": 2}, models=[str(tiny_gpt2)])
    reply = json.dumps([{**CAPITAL, "target": "Kathmandu"}, {**CAPITAL, "template": "x"}])
    with raises_lab_error(InputError, match="none of the drafted facts") as info:
        build(lab, request, draft_fn=lambda domain, count: reply)
    assert info.value.field == "source"


def test_sampled_facts_are_truncated_to_count_and_token_failures_dropped(lab, tiny_gpt2):
    request = GenerateFactsRequest(source={"kind": "sampling", "domain": "x", "count": 1}, models=[str(tiny_gpt2)])
    reply = json.dumps([{**CAPITAL, "clean_subject": "japan", "target": "Kathmandu"}, CAPITAL,
                        {**CAPITAL, "clean_subject": "england"}])
    fs = build(lab, request, draft_fn=lambda domain, count: reply)
    assert [f.clean_subject for f in fs.facts] == ["france"]
    assert [(d.index, d.field) for d in fs.dropped] == [(0, "target")]


# -- datasets --------------------------------------------------------------------------------------

def test_same_request_gives_identical_datasets(lab, tiny_gpt2):
    request = rome_request(ROME, seed=3).model_copy(update={"models": []})
    a = run_generate_facts(request, lab=lab, reporter=NULL_REPORTER)
    b = run_generate_facts(request, lab=lab, reporter=NULL_REPORTER)
    assert lab.store.read_json(a.run_id, "dataset.json") == lab.store.read_json(b.run_id, "dataset.json")


def test_the_saved_dataset_and_run_config_round_trip_through_their_records(lab, tiny_gpt2):
    rome_run = run_generate_facts(rome_request(ROME, seed=2, relations=["P36"]), lab=lab, reporter=NULL_REPORTER)
    config = read_back(lab, rome_run.run_id, CONFIG_FILE, GenerateFactsRunConfig.model_validate)
    assert config.source == rome_request(ROME, seed=2, relations=["P36"]).source
    assert (config.domain, config.models, config.seed, config.n_facts, config.n_dropped) == ("rome", [], 2, 5, 0)
    dataset = read_back(lab, rome_run.run_id, DATASET_FILE, FactSet.model_validate)
    assert dataset.facts == load_dataset(lab, rome_run.run_id) and [f.id for f in dataset.facts] == rome_run.fact_ids
    request = GenerateFactsRequest(source={"kind": "sampling", "domain": "x", "count": 2}, models=[str(tiny_gpt2)],
                                   multi_token="first_token")
    reply = json.dumps([{**CAPITAL, "clean_subject": "japan", "target": "Kathmandu"}, CAPITAL])
    drafted = run_generate_facts(request, lab=lab, reporter=NULL_REPORTER, draft_fn=lambda domain, count: reply)
    config = read_back(lab, drafted.run_id, CONFIG_FILE, GenerateFactsRunConfig.model_validate)
    assert (config.source.kind, config.multi_token_policy, config.n_facts, config.n_dropped) == (
        "sampling", "first_token", 1, 1)
    dataset = read_back(lab, drafted.run_id, DATASET_FILE, FactSet.model_validate)
    assert dataset.dropped == drafted.dropped and [r.model for r in dataset.validation] == [str(tiny_gpt2)]


def test_load_dataset_errors_name_dataset_run_id(lab):
    with raises_lab_error(NotFound) as info:
        load_dataset(lab, "20260101T000000Z-generate_facts-00000000")
    assert info.value.field == "dataset_run_id"
    with lab.store.open_run("trace", {"x": 1}) as run:
        pass
    with raises_lab_error(InputError) as info:
        load_dataset(lab, run.run_id)
    assert info.value.field == "dataset_run_id"


def test_default_models_validate_every_pack_on_the_shipped_models(lab):
    from neurotrace.lab.facts.generate import default_models

    names = default_models()
    if not names:
        pytest.skip("the embedded fact models are not built in this checkout")
    for domain in WORLD_PACKS:
        fs = build(lab, GenerateFactsRequest(source={"kind": "pack", "domains": [domain]}))
        assert [r.model for r in fs.validation] == names
        assert all(r.n_ok == len(fs.facts) for r in fs.validation)
