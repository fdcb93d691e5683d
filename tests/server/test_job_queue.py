"""Issue 23 item 4 through a real MCP client: with NEUROTRACE_MAX_JOBS=N, the N+1st detached job waits in
line with its place shown by run_status (and a waited call's progress), starts when one finishes, and a
queued job can be cancelled before it ever starts."""

import anyio
import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

pytestmark = pytest.mark.anyio
PACK = {"request": {"source": {"kind": "pack", "domains": ["geography"]}, "models": []}}
LONG = {"request": {"parts": ["circuits"], "seeds": 2, "samples": 20000, "ig_steps": 2048}}


async def _status(client: Client, run_id: str, cancel: bool = False) -> dict:
    got = await client.call_tool("run_status", {"run_id": run_id, "cancel": cancel})
    assert not got.is_error, got.content
    return got.structured_content


async def _until(client: Client, run_id: str, wanted: set[str]) -> dict:
    while (status := await _status(client, run_id))["status"] not in wanted:
        await anyio.sleep(0.05)
    return status


async def test_the_job_beyond_the_limit_waits_with_its_place_and_starts_when_one_finishes(tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs", max_jobs=1))
    progress: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        with anyio.fail_after(180):
            first = (await client.call_tool("benchmark", {**LONG, "wait": False})).structured_content["run_id"]
            await _until(client, first, {"running"})
            while not list(lab.store.root.glob("*-benchmark-*")):   # it holds the one slot
                await anyio.sleep(0.05)
            second = (await client.call_tool("generate_facts", {**PACK, "wait": False})).structured_content["run_id"]
            third = (await client.call_tool("generate_facts", {**PACK, "wait": False})).structured_content["run_id"]
            queued = await _until(client, third, {"queued"})
            assert queued["place"] == 2 and "queued: place 2 of 2" in queued["message"], queued
            ahead = await _status(client, second)
            assert ahead["status"] == "queued" and ahead["place"] == 1
            assert "NEUROTRACE_MAX_JOBS=1" in ahead["message"]
            assert not (lab.store.root / second).exists()   # nothing of it ran yet

            async with anyio.create_task_group() as tg:   # a waited call in line hears its place as progress
                waited: list = []

                async def call() -> None:
                    waited.append(await client.call_tool("generate_facts", PACK, progress_callback=on_progress))

                tg.start_soon(call)
                while not any("queued: place 3 of 3" in m for m in progress):
                    await anyio.sleep(0.05)

                cancelled = await _status(client, third, cancel=True)   # a queued job cancels at once
                cancelled = await _until(client, third, {"cancelled"})
                assert cancelled["result"] is None and not (lab.store.root / third).exists()
                assert (await _status(client, second))["place"] == 1

                await _status(client, first, cancel=True)   # the running job ends: the next one starts
                assert (await _until(client, first, {"cancelled", "complete", "failed"}))["status"] == "cancelled"
                done = await _until(client, second, {"complete", "failed", "cancelled"})
                assert done["status"] == "complete" and done["result"]["run_id"] == second
            assert not waited[0].is_error
            assert any("queued: place 2 of 2" in m for m in progress)   # it moved up when `third` left
    assert lab.admission.counts() == (0, 0)


@pytest.mark.parametrize("argv, env, says", [(["--max-jobs", "0"], None, "--max-jobs must be at least 1"),
                                             ([], "lots", "NEUROTRACE_MAX_JOBS must be a whole number")])
def test_a_bad_job_limit_stops_the_server_with_a_message(argv, env, says, monkeypatch, capsys, tmp_path):
    from neurotrace.server import main

    if env is not None:
        monkeypatch.setenv("NEUROTRACE_MAX_JOBS", env)
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--runs-dir", str(tmp_path / "runs")])
    assert says in str(stop.value) + capsys.readouterr().err
