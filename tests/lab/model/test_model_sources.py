"""Every tool accepts the same models: embedded names, catalog names, .gguf files and directories.

The GGUF path is exercised on tiny files the test writes itself (F32 tensors), converted once into a
content-addressed cache under ``NEUROTRACE_MODELS_DIR`` and then used by ``load_model`` and ``trace``.
"""

import pytest
import torch

from neurotrace import Lab, LabSettings, TraceRequest, run_load_model, run_trace
from neurotrace.lab.errors import InputError, NotFound
from neurotrace.lab.facts import Fact
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.loading import ModelRef, load, resolve_source
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.gguf_writer import write_tiny_gguf

pytest.importorskip("gguf", reason="the gguf package writes the test files (pip install gguf)")


@pytest.fixture
def models_home(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROTRACE_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


@pytest.fixture
def tiny_gguf(tmp_path):
    return write_tiny_gguf("llama", tmp_path / "files", seed=0)


def test_a_gguf_file_loads_like_its_source_model_and_records_its_provenance(models_home, tiny_gguf):
    path, source = tiny_gguf
    lm = load(ModelRef(model=str(path)))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, source(ids).logits, atol=1e-4, rtol=1e-4)
    assert lm.provenance["gguf"]["tensor_types"] and "dequantised" in lm.provenance["note"]
    assert lm.source.startswith(str(models_home / "converted"))
    assert resolve_source(str(path.parent)) == lm.source        # a directory holding the file: same cache entry


def test_load_model_and_trace_accept_a_gguf_path(models_home, tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    info = run_load_model(ModelRef(model=str(path)), lab=lab)
    assert info.model["gguf"]["sha256"] and "dequantised" in info.summary
    fact = Fact(template="the city of {} is", clean_subject="paris", corrupt_subject="world", target="located")
    result = run_trace(TraceRequest(trace_unknown=True, models=[str(path)], facts=[fact], components=["resid"],
                                    corruption={"kind": "noise", "samples": 2}), lab=lab)
    assert result.run_id and result.models[0].n_layers == 2


def test_a_missing_gguf_path_and_a_bad_name_are_errors_naming_the_model_field(models_home, tmp_path):
    with raises_lab_error(NotFound) as err:
        resolve_source(str(tmp_path / "nothing.gguf"))
    assert err.value.field == "model"
    with raises_lab_error(InputError) as err:
        resolve_source("x" * 300)
    assert err.value.field == "model"


def test_a_catalog_model_that_is_not_installed_names_the_fetch_command(models_home, monkeypatch):
    monkeypatch.setattr(catalog, "is_installed", lambda name, home=None: False)
    with raises_lab_error(NotFound) as err:
        resolve_source("smollm2-135m-instruct")
    assert "neurotrace models fetch smollm2-135m-instruct" in str(err.value)
