"""The MCP server through the real in-memory client: tools, resources, errors, progress, cancellation."""

import threading

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver import Context

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.progress import Reporter
from neurotrace.server import build_server
from neurotrace.tools._runner import run_in_lab

pytestmark = pytest.mark.anyio


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def _make_run(lab: Lab) -> str:
    with lab.store.open_run("demo", {"x": 1}) as run:
        run.write_json("result.json", {"ok": True})
        run.write_text("report.md", "# hello\n")
        run.write_bytes("figures/f.png", b"\x89PNG\r\n\x1a\nfake")
        return run.run_id


async def test_load_model_reports_shape_and_list_models_shows_it(lab, tiny_gpt2):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("load_model", {"request": {"model": str(tiny_gpt2)}})
        assert not result.is_error
        info = result.structured_content["model"]
        assert info["n_layers"] == 2 and info["d_model"] == 32 and info["lm_kind"] == "causal"
        listed = await client.call_tool("list_models", {})
        assert [m["model"] for m in listed.structured_content["loaded"]] == [str(tiny_gpt2)]
        models = await client.read_resource("neurotrace://models")
        assert str(tiny_gpt2) in models.contents[0].text
        released = await client.call_tool("release_model", {"model": str(tiny_gpt2)})
        assert released.structured_content["released"]


async def test_bad_inputs_give_typed_errors_and_the_server_keeps_serving(tmp_path, tiny_gpt2):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs", memory_budget_bytes=1000))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        unknown = await client.call_tool("load_model", {"request": {"model": "nobody/nothing"}})
        assert unknown.is_error and "model: cannot load model 'nobody/nothing'" in unknown.content[0].text
        assert "Fix:" in unknown.content[0].text
        dtype = await client.call_tool("load_model", {"request": {"model": str(tiny_gpt2), "dtype": "float64"}})
        assert dtype.is_error and "dtype" in dtype.content[0].text
        budget = await client.call_tool("load_model", {"request": {"model": str(tiny_gpt2)}})
        assert budget.is_error and "memory budget" in budget.content[0].text
        release = await client.call_tool("release_model", {"model": "never"})
        assert release.is_error and "not loaded" in release.content[0].text
        still = await client.call_tool("list_models", {})
        assert not still.is_error and still.structured_content["budget_bytes"] == 1000


async def test_run_resources_serve_listed_artifacts_only(lab):
    run_id = _make_run(lab)
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        runs = await client.read_resource("neurotrace://runs")
        assert run_id in runs.contents[0].text
        manifest = await client.read_resource(f"neurotrace://runs/{run_id}/manifest")
        assert '"status": "complete"' in manifest.contents[0].text
        report = await client.read_resource(f"neurotrace://runs/{run_id}/artifacts/report.md")
        assert report.contents[0].text == "# hello\n"
        png = await client.read_resource(f"neurotrace://runs/{run_id}/artifacts/figures/f.png")
        assert png.contents[0].blob
        for uri in (f"neurotrace://runs/{run_id}/artifacts/../../../etc/passwd",
                    f"neurotrace://runs/{run_id}/artifacts/missing.json",
                    "neurotrace://runs/not-a-run/manifest", "neurotrace://elsewhere"):
            with pytest.raises(Exception, match="nknown resource|no artifact|no run"):
                await client.read_resource(uri)
        templates = await client.list_resource_templates()
        assert {t.name for t in templates.resource_templates} >= {"run_manifest", "run_artifact"}


def _slow_experiment(request: dict, *, lab: Lab, reporter: Reporter) -> dict:
    with lab.store.open_run("slow", request) as run:
        request["run_id"] = run.run_id
        for i in range(10_000):
            reporter.step(i, 10_000, f"unit {i}")
            threading.Event().wait(0.01)
    return {"summary": "done", "run_id": run.run_id}


async def test_progress_is_reported_and_cancellation_marks_the_run_cancelled(lab):
    server = build_server(lab=lab)
    shared: dict = {}

    async def slow(ctx: Context) -> dict:
        """A slow test experiment."""
        return await run_in_lab(ctx, _slow_experiment, shared)

    server.add_tool(slow)
    seen: list[float] = []
    async with Client(server, raise_exceptions=True) as client:
        got_progress = anyio.Event()

        async def on_progress(progress, total, message):
            seen.append(progress)
            if progress >= 2:
                got_progress.set()

        async with anyio.create_task_group() as tg:
            async def call():
                await client.call_tool("slow", {}, progress_callback=on_progress)

            tg.start_soon(call)
            with anyio.fail_after(20):
                await got_progress.wait()
            tg.cancel_scope.cancel()
        with anyio.fail_after(20):
            while lab.store.manifest(shared["run_id"]).status == "running":
                await anyio.sleep(0.05)
        assert lab.store.manifest(shared["run_id"]).status == "cancelled"
        assert seen[:3] == [0, 1, 2]
        assert not (await client.call_tool("list_models", {})).is_error
