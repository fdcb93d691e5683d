"""clamp_sweep through the real in-memory MCP client: structured result, progress, cancel, errors."""

import anyio
import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server
from neurotrace.testing.planted_clamp import build_repetition_model

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_repetition_model(tmp_path_factory.mktemp("planted-tool") / "m", layer=1, index=3)


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


async def test_sweep_reports_counts_best_values_links_and_progress(lab, planted):
    seen = []

    async def on_progress(progress, total, message):
        seen.append((progress, total))

    request = {"model": str(planted), "neurons": ["1:3"], "prompts": ["the cat", "a"], "max_new_tokens": 12,
               "values": [0, 10], "batch_size": 2, "controls": 1}
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("clamp_sweep", {"request": request}, progress_callback=on_progress)
    assert not result.is_error
    data = result.structured_content
    assert data["n_collapsed_baselines"] == 2 and data["n_recovered"] == 2
    assert data["best"][0]["value"] == 0.0 and data["best"][0]["n_improved"] == 2
    assert data["report"].endswith("/report.md") and data["table"].endswith("/clamp_sweep.csv")
    assert data["plot"].endswith("/improvement_rate.png")
    assert lab.store.manifest(data["run_id"]).status == "complete"
    kinds = {block.type for block in result.content}
    assert {"text", "image", "resource_link"} <= kinds
    assert [p for p, _ in seen][:3] == [0, 2, 4] and seen[-1] == (10, 10)  # one step per batch of 2 rows
    assert data["verdict"] == "specific" and data["groups"][0]["control_recovered"] == [0]
    assert data["baseline_collapse_types"]["loop"] == 2 and "specific" in result.content[0].text
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        plot = await client.call_tool("plot", {"request": {"run_id": data["run_id"], "kind": "improvement_rate",
                                                           "options": {"neurons": ["1:3"], "title": "t"}}})
        assert not plot.is_error and plot.structured_content["kinds"] == ["improvement_rate"]
        assert set(plot.structured_content["available_kinds"]) == {"improvement_rate", "sweep_metrics"}
        wrong = await client.call_tool("plot", {"request": {"run_id": data["run_id"], "kind": "sweep_metrics",
                                                            "options": {"neurons": ["0:0"]}}})
        assert wrong.is_error and "1:3" in wrong.content[0].text


async def test_cancelling_marks_the_run_cancelled(lab, planted):
    request = {"model": str(planted), "neurons": ["1:3"], "prompts": ["the cat"] * 60, "max_new_tokens": 100,
               "values": [0, 10], "batch_size": 1}
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        started = anyio.Event()

        async def on_progress(progress, total, message):
            if progress >= 1:
                started.set()

        async with anyio.create_task_group() as tg:
            async def call():
                await client.call_tool("clamp_sweep", {"request": request}, progress_callback=on_progress)

            tg.start_soon(call)
            with anyio.fail_after(60):
                await started.wait()
            tg.cancel_scope.cancel()
        with anyio.fail_after(60):
            while not lab.store.list_runs("clamp_sweep") or \
                    lab.store.list_runs("clamp_sweep")[0].status == "running":
                await anyio.sleep(0.05)
        assert lab.store.list_runs("clamp_sweep")[0].status == "cancelled"
        again = await client.call_tool("clamp_sweep", {"request": {**request, "prompts": ["a"],
                                                                   "max_new_tokens": 4}})
        assert not again.is_error


async def test_input_errors_name_the_field(lab, planted):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        bad = await client.call_tool("clamp_sweep", {"request": {"model": str(planted), "neurons": ["1:16"],
                                                                 "prompts": ["a"]}})
        assert bad.is_error and "neurons: index 16" in bad.content[0].text and "16 wide" in bad.content[0].text
        empty = await client.call_tool("clamp_sweep", {"request": {"model": str(planted), "neurons": ["1:3"],
                                                                   "prompts": ["a"], "values": [None]}})
        assert empty.is_error and "values:" in empty.content[0].text
