"""capture.json is the JSON dump of its typed record, and capture runs written before the record still read."""

import json

import pytest

from neurotrace import CaptureRequest, FitSAERequest, run_capture, run_fit_sae
from neurotrace.lab.capture import capture_info, load_trace_dataset
from neurotrace.lab.capture.schema import CaptureRecord
from neurotrace.lab.capture.store import CAPTURE_FILE
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.testing.records import read_back

SITES = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def capture(lab, model, **kw):
    request = CaptureRequest(model=str(model), sites=SITES, prompts=["the cat is big", "a dog is small"], **kw)
    return run_capture(request, lab=lab, reporter=NULL_REPORTER)


def test_capture_json_is_the_dump_of_its_record_and_names_what_was_stored(lab, tiny_gpt2):
    result = capture(lab, tiny_gpt2, skip_positions=1, max_new_tokens=2, store_dtype="float16")
    rec = read_back(lab, result.run_id, CAPTURE_FILE, CaptureRecord.model_validate)
    assert rec == capture_info(lab.store, result.run_id)
    with lab.cache.lease(ModelRef(model=str(tiny_gpt2))) as lm:
        assert rec.fingerprint == lm.fingerprint and rec.lm_kind == "causal"
        assert rec.special_ids == sorted(lm.tokenizer.all_special_ids)
    assert (rec.n_rows, rec.n_steps, rec.skip_positions, rec.store_dtype) == (result.n_rows, 2, 1, "float16")
    assert {s: site.width for s, site in rec.sites.items()} == result.widths
    assert rec.generation is not None and rec.generation.path == "kv_cache"
    ds = load_trace_dataset(lab, result.run_id, SITES[1])
    assert ds.info == rec and ds.states.shape == (rec.n_rows, rec.sites[SITES[1]].width)


def test_a_capture_json_from_before_the_record_reads_with_defaults_and_feeds_fit_sae(lab, tiny_gpt2):
    result = capture(lab, tiny_gpt2)
    path = lab.store.artifact_path(result.run_id, CAPTURE_FILE)
    new = lab.store.read_json(result.run_id, CAPTURE_FILE)
    old = {"model": new["model"], "kind": new["lm_kind"], "fingerprint": new["fingerprint"],   # the first layout
           "positions": new["positions"], "n_rows": new["n_rows"], "n_steps": new["n_steps"],
           "store_dtype": new["store_dtype"], "sites": new["sites"]}
    path.write_text(json.dumps(old), encoding="utf-8")
    rec = capture_info(lab.store, result.run_id)
    assert rec.lm_kind == "causal" and rec.special_ids == [] and rec.generation is None
    assert (rec.skip_positions, rec.skip_bos) == (0, False)
    fit = run_fit_sae(FitSAERequest(capture_run_id=result.run_id, site=SITES[0], n_steps=5, batch_size=4,
                                    splice_steps=1), lab=lab, reporter=NULL_REPORTER)
    assert fit.run_id


def test_a_capture_record_refuses_unknown_keys():
    with pytest.raises(ValueError, match="extra"):
        CaptureRecord.model_validate({"model": "m", "lm_kind": "causal", "fingerprint": "f", "positions": "all",
                                      "n_rows": 0, "n_steps": 0, "store_dtype": "float32", "sites": {},
                                      "surprise": 1})
