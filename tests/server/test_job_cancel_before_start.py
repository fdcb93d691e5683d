"""A call cancelled before its worker thread begins (the server closing just after a wait=false start, a
client cancelling at once) ends at once: nothing ran, so there is no worker to wait for."""

import threading

import anyio
import anyio.to_thread
import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

pytestmark = pytest.mark.anyio
PACK = {"request": {"source": {"kind": "pack", "domains": ["geography"]}, "models": []}}


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


async def test_a_detached_job_cancelled_before_its_thread_starts_lets_the_server_close(lab, monkeypatch):
    real, waited = anyio.to_thread.run_sync, []

    async def run_sync(func, *args, **kwargs):
        if getattr(func, "__qualname__", "") == "call_in_thread.<locals>.target":
            await anyio.sleep_forever()  # still queued for a thread when the cancel comes
        if isinstance(getattr(func, "__self__", None), threading.Event):
            waited.append(func.__self__)  # waiting for a worker's end
            threading.Timer(2.0, func.__self__.set).start()  # that never comes; free it to fail, not hang
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", run_sync)
    with anyio.fail_after(60):
        async with Client(build_server(lab=lab), raise_exceptions=True) as client:
            started = await client.call_tool("generate_facts", {**PACK, "wait": False})
            run_id = started.structured_content["run_id"]
            waiting = await client.call_tool("run_status", {"run_id": run_id})
            assert waiting.structured_content["status"] == "running"
    assert not waited  # the server closed at once
    assert not list(lab.store.root.iterdir())  # and the work never began: no run directory
