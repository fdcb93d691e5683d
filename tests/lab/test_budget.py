"""Job bounds: one check (lab.check) refuses oversize jobs before any work, for the Python API and the CLI
as for the MCP tools; every estimated tool sizes its request from the model's shape."""

import json

import pytest

from neurotrace import (
    EXPERIMENTS,
    AttentionRequest,
    AttributeRequest,
    CaptureRequest,
    ClampSweepRequest,
    ExplainRequest,
    FeaturesRequest,
    FindNeuronsRequest,
    FitSAERequest,
    InterveneRequest,
    Lab,
    LabSettings,
    LogitLensRequest,
    ModelRef,
    PatchRequest,
    ProbeRequest,
    SteerRequest,
    TraceRequest,
    run_intervene,
    run_load_model,
    run_trace,
)
from neurotrace.cli import main
from neurotrace.lab.diff import DiffRequest
from neurotrace.lab.editing import EditRequest
from neurotrace.lab.errors import InputError
from neurotrace.lab.graph import GraphRequest
from neurotrace.lab.jobs import GUESS, Costed, dims_of, job_estimate
from neurotrace.lab.model.weights import catalog
from neurotrace.testing.errors import raises_lab_error

FACT = {"template": "The capital of {} is", "clean_subject": "France", "target": "Paris", "corrupt_subject": "Japan"}
PROMPT = "The capital of France is"
MiB = 2**20


def _lab(tmp_path, **settings) -> Lab:
    return Lab(LabSettings(runs_dir=tmp_path / "runs", **settings))


def test_an_oversize_trace_is_refused_by_the_python_api_before_any_work(tmp_path):
    small = TraceRequest(models=["fact-gpt2"], facts=[FACT])
    big = TraceRequest(models=["fact-gpt2"], facts=[FACT] * 20_000)
    probe = _lab(tmp_path)
    assert job_estimate(big, probe).bytes > job_estimate(small, probe).bytes * 4
    lab = _lab(tmp_path, memory_budget_bytes=job_estimate(small, probe).bytes * 2)
    lab.check(small)
    with raises_lab_error(InputError, match="over the limit") as err:
        run_trace(big, lab=lab)
    assert err.value.field == "facts" and "MiB" in str(err.value) and "forward rows" in str(err.value)
    assert "corruption.samples" in err.value.fix and "NEUROTRACE_MEMORY_BUDGET" in err.value.fix
    assert lab.cache.listing() == [] and not any(lab.store.root.iterdir())   # no model load, no run


def test_an_oversize_intervene_is_refused_by_the_python_api_before_any_work(tmp_path):
    lab = _lab(tmp_path, memory_budget_bytes=64 * MiB)
    lab.check(InterveneRequest(model="fact-gpt2", prompts=[PROMPT]))
    with raises_lab_error(InputError, match="intervene job needs about") as err:
        run_intervene(InterveneRequest(model="fact-gpt2", prompts=[PROMPT * 3] * 20_000, max_new_tokens=64), lab=lab)
    assert err.value.field == "prompts" and "max_new_tokens" in err.value.fix
    assert lab.cache.listing() == [] and not any(lab.store.root.iterdir())


def test_the_cli_refuses_an_oversize_job_with_the_same_typed_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEUROTRACE_MEMORY_BUDGET", "1MiB")
    request = json.dumps({"models": ["fact-gpt2"], "facts": [FACT]})
    assert main(["--runs-dir", str(tmp_path / "runs"), "trace", "--request", request]) == 2
    err = capsys.readouterr().err
    assert "facts: this trace job needs about" in err and "over the limit of 1 MiB" in err and "Fix: reduce" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_forward_row_limit_refuses_jobs_that_run_too_many_rows(tmp_path):
    lab = _lab(tmp_path, max_job_rows=1000)
    with raises_lab_error(InputError, match="forward rows, over the limit of 1,000") as err:
        lab.check(TraceRequest(models=["fact-gpt2"], facts=[FACT]))
    assert "NEUROTRACE_MAX_JOB_ROWS" in err.value.fix
    lab.check(LogitLensRequest(model="fact-gpt2", prompt=PROMPT))


#: tool -> (a small request, the same request made bigger along one of its size fields)
SIZED = {
    "diff": (DiffRequest(model="fact-gpt2-cyber", base="fact-gpt2", prompts=[PROMPT]), {"prompts": [PROMPT] * 50}),
    "trace": (TraceRequest(models=["fact-gpt2"], facts=[FACT]), {"facts": [FACT] * 50}),
    "intervene": (InterveneRequest(model="fact-gpt2", prompts=[PROMPT]), {"prompts": [PROMPT] * 50}),
    "patch": (PatchRequest(model="fact-gpt2", clean=PROMPT, corrupt="The capital of Japan is"), {"batch_size": 512}),
    "logit_lens": (LogitLensRequest(model="fact-gpt2", prompt=PROMPT), {"fit_prompts": [PROMPT] * 50}),
    "find_neurons": (FindNeuronsRequest(model="fact-gpt2", prompts=[PROMPT], control_prompts=["a b"]),
                     {"prompts": [PROMPT] * 500}),
    "steer": (SteerRequest.model_validate({"model": "fact-gpt2", "prompts": [PROMPT], "targets": ["Paris"],
                                           "direction_from": {"pairs": [["a", "b"], ["c", "d"]], "layer": 2}}),
              {"prompts": [PROMPT] * 50}),
    "probe": (ProbeRequest(model="fact-gpt2", prompts=["a", "b", "c", "d"], labels=["x", "x", "y", "y"]),
              {"prompts": ["a"] * 5000, "labels": ["x", "y"] * 2500}),
    "attribute": (AttributeRequest(model="fact-gpt2", prompt=PROMPT), {"corrupt_prompt": "The capital of Japan is"}),
    "attention": (AttentionRequest(model="fact-gpt2", prompt=PROMPT), {"induction_len": 128}),
    "fit_sae": (FitSAERequest(capture_run_id="capture-1"), {"batch_size": 4096}),
    "clamp_sweep": (ClampSweepRequest(model="fact-gpt2", neurons=["1:3"], prompts=[PROMPT], values=[0, 5]),
                    {"prompts": [PROMPT] * 50}),
    "capture": (CaptureRequest(model="fact-gpt2", prompts=[PROMPT]), {"prompts": [PROMPT] * 50}),
    "graph": (GraphRequest(model="fact-gpt2", prompt=PROMPT, transcoders={"kind": "random"}, max_feature_nodes=64),
              {"max_feature_nodes": 4096}),
    "edit": (EditRequest(model="fact-gpt2", pack="geography", max_facts=2), {"sweep_layers": True}),
    "features": (FeaturesRequest(dictionary="fit_sae-1"), {"max_tokens": 200_000}),
    "explain": (ExplainRequest(model="fact-gpt2", neuron="0:1"), {"max_tokens": 131_072}),
}
#: sized from guessed widths (WIDTH_GUESS), not from the model's shape: coarse, so not held to "modest"
GUESS_SIZED = {"fit_sae", "capture", "features"}


@pytest.mark.parametrize("tool", sorted(SIZED))
def test_each_estimate_is_modest_for_a_small_request_and_grows_with_its_size_fields(tool, tmp_path):
    lab = _lab(tmp_path)
    small, grow = SIZED[tool]
    a, b = job_estimate(small, lab), job_estimate(type(small).model_validate({**small.model_dump(), **grow}), lab)
    assert 0 <= a.rows <= b.rows and 0 < a.bytes < b.bytes, (a, b)   # rows: 0 where only bytes are sized
    assert set(a.fields) <= set(type(small).model_fields) | {"corruption.samples"}   # a renamed field fails here
    assert a.bytes < 128 * MiB or tool in GUESS_SIZED   # sized from the model's shape: modest


def test_every_request_with_a_cost_model_is_covered_and_unknown_models_are_sized_by_a_guess(tmp_path):
    assert set(SIZED) == {e.name for e in EXPERIMENTS if issubclass(e.request, Costed)}
    assert {type(small).tool for small, _ in SIZED.values()} == set(SIZED)   # the tool name is the request's own
    lab = _lab(tmp_path)
    assert dims_of(lab, "fact-gpt2").n_layers == 6 and dims_of(lab, "fact-gpt2").d_model == 128
    assert dims_of(lab, "nobody/nothing") == GUESS
    unknown = TraceRequest(models=["nobody/nothing"], facts=[FACT])
    assert job_estimate(unknown, lab).bytes > job_estimate(SIZED["trace"][0], lab).bytes


def test_catalog_models_are_sized_from_their_gguf_header_without_loading(tmp_path):
    if not catalog.is_installed("smollm2-135m-instruct"):
        pytest.skip("install it with `neurotrace models fetch smollm2-135m-instruct`")
    lab = _lab(tmp_path)
    dims = dims_of(lab, "smollm2-135m-instruct")
    assert (dims.n_layers, dims.d_model, dims.n_heads, dims.d_vocab) == (30, 576, 9, 49152)
    assert lab.cache.listing() == []


def test_load_model_applies_the_same_field_bounds(tmp_path):
    with raises_lab_error(InputError) as err:
        run_load_model(ModelRef(model="fact-gpt2", device="meta"), lab=_lab(tmp_path))
    assert err.value.field == "device" and "not available" in str(err.value)


def test_clamp_sweeps_whole_grid_is_estimated_and_an_oversize_grid_is_refused_before_any_run(tmp_path):
    """Issue 23 item 2: prompts x values x tokens, not one batch; 100,000 prompts x 1,000 values was accepted."""
    lab = _lab(tmp_path)
    huge = ClampSweepRequest(model="fact-gpt2", neurons=["1:3"], prompts=["p"] * 100_000,
                             values=[float(v) for v in range(1000)])
    with raises_lab_error(InputError, match="clamp_sweep job needs about") as err:
        lab.check(huge)
    assert err.value.field == "prompts" and "values" in err.value.fix
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    small = ClampSweepRequest(model="fact-gpt2", neurons=["1:3"], prompts=["p"] * 3, values=[0, 5], controls=1,
                              max_new_tokens=4)
    assert job_estimate(small, lab).rows == 3 * (1 + 2 * 2) * 4  # prompts x settings x tokens


def test_a_prompt_files_prompts_are_counted_before_the_job(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "grid.jsonl").write_text("".join(json.dumps({"prompt": f"prompt number {i}"}) + "\n"
                                               for i in range(20_000)), encoding="utf-8")
    (inputs / "bad.jsonl").write_text('{"prompt": "ok"}\nnot json\n', encoding="utf-8")
    lab = _lab(tmp_path, input_dirs=(inputs,))
    one = ClampSweepRequest(model="fact-gpt2", neurons=["1:3"], prompts=["p"], values=[0], controls=0,
                            max_new_tokens=1)
    from_file = one.model_copy(update={"prompts": [], "prompt_file": str(inputs / "grid.jsonl")})
    assert job_estimate(from_file, lab).rows == 20_000 * job_estimate(one, lab).rows
    big = from_file.model_copy(update={"values": [float(v) for v in range(1000)], "max_new_tokens": 50})
    with raises_lab_error(InputError, match="clamp_sweep job needs about") as err:
        lab.check(big)  # was: the 1.3 MB file counted as one prompt, accepted, MemoryError later
    assert err.value.field == "prompt_file"
    with raises_lab_error(InputError, match="line 2 is not valid JSON"):  # a bad file is refused before the job
        lab.check(one.model_copy(update={"prompt_file": str(inputs / "bad.jsonl")}))


def test_a_default_row_cap_refuses_days_of_work_and_admits_the_readme_trace(tmp_path, monkeypatch):
    """Issue 23 item 3: time was unbounded by default (a 1,000-fact x 100-sample trace was accepted)."""
    monkeypatch.delenv("NEUROTRACE_MAX_JOB_ROWS", raising=False)
    lab = Lab(LabSettings.from_env(runs_dir=tmp_path / "runs"))
    huge = TraceRequest(models=["nobody/big-model"], facts=[FACT] * 1000,
                        corruption={"kind": "noise", "samples": 100})
    with raises_lab_error(InputError, match="forward rows, over the limit of 50,000,000") as err:
        lab.check(huge)
    assert "NEUROTRACE_MAX_JOB_ROWS" in err.value.fix and err.value.field == "facts"
    readme = TraceRequest(models=["fact-gpt2", "fact-gpt2-cyber"], pack="geography",
                          corruption={"kind": "noise", "scale": 3, "samples": 10}, components=["resid", "mlp", "attn"])
    lab.check(readme)
    monkeypatch.setenv("NEUROTRACE_MAX_JOB_ROWS", "off")
    assert LabSettings.from_env().max_job_rows is None


@pytest.mark.parametrize("tool", ["trace", "patch"])
def test_bfloat16_estimates_fewer_bytes_and_counts_the_float32_check(tool, tmp_path):
    lab = _lab(tmp_path)
    small, _ = SIZED[tool]
    f32 = job_estimate(small, lab)
    bf16 = job_estimate(small.model_copy(update={"precision": "bfloat16"}), lab)
    assert bf16.bytes < f32.bytes and bf16.rows > f32.rows
