"""Issue 12's reproductions through the real in-memory client: files, memory, errors, artifacts, runs."""

import json
import os
import subprocess
import sys

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

pytestmark = pytest.mark.anyio
SWEEP = {"model": "fact-gpt2", "neurons": ["1:1"], "prompts": []}


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def _text(result) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def _call(client, tool, request, **extra):
    return await client.call_tool(tool, {"request": request, **extra})


async def test_prompt_file_outside_the_input_directories_is_refused_without_its_content(lab):
    secret = os.environ.get("PATH", "/usr/bin")
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        for path in ("/proc/self/environ", "/etc/passwd", "/dev/zero", "../../etc/passwd"):
            result = await _call(client, "clamp_sweep", {**SWEEP, "prompt_file": path})
            text = _text(result)
            assert result.is_error and "prompt_file" in text and "allowed input directories" in text, text
            assert secret not in text and "root:" not in text and str(lab.store.root) not in text
        for field, source in (("spec", {"kind": "spec", "spec": "/etc/passwd"}),
                              ("records", {"kind": "rome", "records": "/etc/passwd"})):
            result = await _call(client, "generate_facts", {"source": source, "models": []})
            assert result.is_error and f"source.{field}" in _text(result) and "root:" not in _text(result)


async def test_a_symlink_or_device_inside_the_inputs_directory_is_refused(lab):
    inputs = lab.store.root.parent / "inputs"
    inputs.mkdir()
    (inputs / "escape.csv").symlink_to("/etc/passwd")
    (inputs / "zero.jsonl").symlink_to("/dev/zero")
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        for name in ("escape.csv", "zero.jsonl"):
            with anyio.fail_after(10):
                result = await _call(client, "clamp_sweep", {**SWEEP, "prompt_file": name})
            assert result.is_error and "prompt_file" in _text(result) and "root:" not in _text(result)


async def test_a_hard_link_to_a_file_outside_the_inputs_directory_is_refused(lab, tmp_path):
    """Issue 23 item 10: a hard link is not a symlink, but it names a file outside the input directories."""
    inputs = lab.store.root.parent / "inputs"
    inputs.mkdir()
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"prompt": "the secret words"}\n', encoding="utf-8")
    os.link(outside, inputs / "grid.jsonl")
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        with anyio.fail_after(30):
            result = await _call(client, "clamp_sweep", {**SWEEP, "prompt_file": "grid.jsonl"})
    assert result.is_error and "prompt_file" in _text(result) and "hard link" in _text(result), _text(result)
    assert "secret" not in _text(result)


async def test_a_hard_linked_manifest_is_not_served(lab, tmp_path):
    run_id = _demo_run(lab)
    manifest = lab.store.root / run_id / "manifest.json"
    outside = tmp_path / "outside.json"
    outside.write_bytes(manifest.read_bytes().replace(b'"status"', b'"secret": 1, "status"'))
    manifest.unlink()
    os.link(outside, manifest)
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        with pytest.raises(MCPError) as err:
            await client.read_resource(f"neurotrace://runs/{run_id}/manifest")
    assert "secret" not in err.value.error.message


async def test_a_spec_file_in_the_inputs_directory_is_read(lab):
    inputs = lab.store.root.parent / "inputs"
    inputs.mkdir()
    fact = {"clean_subject": "Paris", "template": "{} is the capital of", "target": "France",
            "corrupt_subject": "Rome"}
    spec = {"domain": "toy", "description": "d", "models": [], "facts": [fact], "variants": [], "output_dir": "o"}
    (inputs / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    (inputs / "huge.json").write_bytes(b" " * (lab.inputs.max_bytes + 1))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        ok = await _call(client, "generate_facts", {"source": {"kind": "spec", "spec": "spec.json"}, "models": []})
        assert not ok.is_error, _text(ok)
        big = await _call(client, "generate_facts", {"source": {"kind": "spec", "spec": "huge.json"}, "models": []})
        assert big.is_error and "input limit" in _text(big)


async def test_huge_sizes_are_refused_before_any_work_with_estimate_limit_and_fields(lab):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        huge = await _call(client, "fit_sae", {"capture_run_id": "x", "d_sae": 20_000_000})
        text = _text(huge)
        assert huge.is_error and "GiB" in text and "over the limit" in text and "d_sae" in text, text
        beyond = await _call(client, "fit_sae", {"capture_run_id": "x", "d_sae": 2**63})
        assert beyond.is_error and "d_sae" in _text(beyond)
    assert not list(lab.store.root.iterdir())


async def test_values_torch_cannot_take_get_a_message_naming_the_field(lab):
    cases = [("clamp_sweep", {**SWEEP, "prompts": ["hi"], "values": [1e308]}, "values[0]"),
             ("clamp_sweep", {**SWEEP, "prompts": ["hi"], "seed": 2**70}, "seed"),
             ("clamp_sweep", {**SWEEP, "prompts": ["hi"], "device": "meta"}, "device"),
             ("clamp_sweep", {**SWEEP, "prompts": ["hi"], "device": "xla"}, "device"),
             ("clamp_sweep", {**SWEEP, "prompts": ["hi"], "model": "m" * 300}, "model"),
             ("clamp_sweep", {**SWEEP, "prompts": ["hi"], "model": "fact-\x00gpt2"}, "model")]
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        for tool, request, field in cases:
            result = await _call(client, tool, request)
            text = _text(result)
            assert result.is_error and field in text and text != f"Error executing tool {tool}", (request, text)


async def test_argument_errors_read_field_problem_fix_without_pydantic_dumps(lab):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        for args in ({"request": {"models": 3}}, {"request": {"facts": [{"subject": 1}]}}, {}, {"request": "x"}):
            result = await client.call_tool("trace", args)
            text = _text(result)
            assert result.is_error and "Fix:" in text, text
            assert "input_value" not in text and "pydantic.dev" not in text and "For further" not in text
        extra = await client.call_tool("list_models", {"anything": 1})
        assert extra.is_error and "anything: unknown argument" in _text(extra)


async def test_unknown_prompt_is_invalid_params(lab):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        with pytest.raises(MCPError) as err:
            await client.get_prompt("no_such_prompt", {})
        assert err.value.error.code == -32602 and "no_such_prompt" in err.value.error.message


def _demo_run(lab: Lab) -> str:
    with lab.store.open_run("demo", {"x": 1}) as run:
        run.write_json("result.json", {"ok": True})
        run.write_bytes("figures/f.png", b"\x89PNG\r\n\x1a\nfake")
        run.write_bytes("arrays/a.safetensors", b"\x00\x01binary")
        return run.run_id


async def test_artifacts_are_served_with_their_media_type(lab):
    run_id = _demo_run(lab)
    base = f"neurotrace://runs/{run_id}/artifacts"
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        png = (await client.read_resource(f"{base}/figures/f.png")).contents[0]
        blob = (await client.read_resource(f"{base}/arrays/a.safetensors")).contents[0]
        js = (await client.read_resource(f"{base}/result.json")).contents[0]
    assert png.mime_type == "image/png" and isinstance(png, types.BlobResourceContents)
    assert blob.mime_type == "application/octet-stream" and isinstance(blob, types.BlobResourceContents)
    assert js.mime_type == "application/json" and isinstance(js, types.TextResourceContents)


async def test_links_inside_or_around_runs_are_not_served(lab, tmp_path):
    run_id = _demo_run(lab)
    run_dir = lab.store.root / run_id
    (run_dir / "result.json").unlink()
    outside = tmp_path / "outside.json"
    outside.write_text('{"secret": 1}', encoding="utf-8")
    os.link(outside, run_dir / "result.json")  # a hard link where a listed artifact was
    alias = "20990101T000000Z-demo-deadbeef"
    (lab.store.root / alias).symlink_to(run_dir)
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        for uri in (f"neurotrace://runs/{run_id}/artifacts/result.json", f"neurotrace://runs/{alias}/manifest"):
            with pytest.raises(MCPError) as err:
                await client.read_resource(uri)
            assert "secret" not in err.value.error.message and str(lab.store.root) not in err.value.error.message


async def test_a_run_whose_process_died_is_listed_as_interrupted(lab):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    run_id = _demo_run(lab)
    path = lab.store.root / run_id / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["status"], manifest["owner"]["pid"], manifest["owner"]["started"] = "running", int(dead.stdout), "clk:1"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        page = json.loads((await client.read_resource("neurotrace://runs")).contents[0].text)
    row = next(r for r in page["runs"] if r["run_id"] == run_id)
    assert row["status"] == "interrupted"
    assert lab.store.manifest(run_id).owner is not None


async def test_runs_resource_pages_newest_first_and_lists_failed_runs_apart(lab):
    ids = [_demo_run(lab) for _ in range(30)]
    with pytest.raises(ValueError):
        with lab.store.open_run("demo", {"x": 2}):
            raise ValueError("boom")
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        first = json.loads((await client.read_resource("neurotrace://runs")).contents[0].text)
        second = json.loads((await client.read_resource(first["next"])).contents[0].text)
        failed = json.loads((await client.read_resource("neurotrace://runs/failed")).contents[0].text)
    seen = [r["run_id"] for r in first["runs"] + second["runs"]]
    assert seen == sorted(ids, reverse=True) and second["next"] is None
    assert first["failed"] == 1 and failed[0]["status"] == "failed" and "boom" in failed[0]["error"]


async def test_completions_offer_model_and_pack_names_and_set_level_is_answered(lab):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        ref = types.PromptReference(type="ref/prompt", name="locate_fact")
        models = await client.complete(ref, {"name": "model", "value": "fact-"})
        assert "fact-gpt2" in models.completion.values
        packs = await client.complete(ref, {"name": "domain", "value": ""})
        assert "geography" in packs.completion.values


async def test_plot_option_errors_name_the_option_its_type_and_allowed_values(lab):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        sweep = await _call(client, "clamp_sweep", {**SWEEP, "prompts": ["the the the"], "max_new_tokens": 4,
                                                     "values": [None, 1.0], "controls": 0})
        assert not sweep.is_error, _text(sweep)
        run_id = sweep.structured_content["run_id"]
        unknown = await _call(client, "plot", {"run_id": run_id, "kind": "improvement_rate", "options": {"nope": 1}})
        assert unknown.is_error and "options.nope" in _text(unknown) and "neurons (list[str] or None)" in _text(unknown)
        wrong = await _call(client, "plot", {"run_id": run_id, "kind": "improvement_rate", "options": {"neurons": 5}})
        assert wrong.is_error and "options.neurons" in _text(wrong) and "expects list[str] or None" in _text(wrong)


async def test_open_world_hint_is_true_exactly_for_tools_that_may_download_a_model(lab):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        hints = {t.name: t.annotations.open_world_hint for t in (await client.list_tools()).tools}
    hints = {name: hint is not False for name, hint in hints.items()}  # omitted = the spec's default, true
    assert hints["load_model"] and hints["trace"] and hints["clamp_sweep"]
    assert not hints["plot"] and not hints["list_models"] and not hints["run_status"]


@pytest.mark.anyio
async def test_a_renamed_field_names_its_new_name(tmp_path):
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs"))) as client:
        result = await client.call_tool("trace", {"request": {"models": ["fact-gpt2"], "pack": "geography",
                                                              "kinds": ["mlp"]}})
    assert result.is_error and "request.kinds: unknown field (renamed). Fix: call it components" in result.content[0].text
