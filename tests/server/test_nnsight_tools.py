"""backend='nnsight' and remote=true through the real in-memory MCP client: the same numbers as backend
'hf'; a remote trace is a long run like any other (wait=false, progress naming the NDIF job, status from a
second connection, cancel through run_status); no key, no remote run."""

import json
import time
from contextlib import contextmanager

import anyio
import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.runtime.ndif import configure_remote
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.runs.store import RunStore
from neurotrace.server import build_server
from neurotrace.testing.fake_ndif import FakeNdif

pytestmark = pytest.mark.anyio
FACT = {"id": "f", "template": "the capital city of {} is known for its", "clean_subject": "france",
        "target": "paris", "corrupt_subject": "japan"}


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


@pytest.fixture
def ndif(tiny_gpt2, monkeypatch):
    fake = FakeNdif(load(ModelRef(model=str(tiny_gpt2), backend="nnsight")).nnsight, hold=True)
    monkeypatch.setenv("NDIF_API_KEY", "k")
    monkeypatch.setenv("NEUROTRACE_NDIF_URL", fake.url)
    previous = configure_remote(transport=fake, poll_seconds=0.01, repo_id=lambda _lm: "openai-community/gpt2")
    yield fake
    configure_remote(**previous)


def _request(model, **extra):
    return {"request": {"models": [model], "facts": [FACT], "trace_unknown": True, "corruption": {"kind": "noise", "samples": 2},
                        "noise_std_from": 0.05, "components": ["resid"], **extra}}


async def _restored(client, out):
    results = json.loads((await client.read_resource(out["results"])).contents[0].text)
    return next(iter(results["models"].values()))["facts"][0]["restored"]["resid"]


async def _poll(client, run_id, until, within=100.0):
    """run_status of ``run_id`` until ``until(status)`` holds; after ``within`` seconds, the last status."""
    status = None
    with anyio.move_on_after(within):
        while True:
            status = (await client.call_tool("run_status", {"run_id": run_id})).structured_content
            if until(status):
                return status
            await anyio.sleep(0.02)
    raise AssertionError(f"run {run_id} never reached the state in {within} s: {status}")


def _finished(status):
    """Done. A connection that did not start the run reads the run's manifest, which closes a moment
    before the server that ran it keeps tool_result.json; the manifest says the result is pending, so
    run_status answers running until it is kept (never complete without the result)."""
    return status["status"] != "running"


def _close(a, b):
    return all(abs(x - y) <= 1e-5 * abs(y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


async def test_trace_with_backend_nnsight_gives_the_hf_numbers_through_mcp(lab, tiny_gpt2):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        hf = await client.call_tool("trace", _request(str(tiny_gpt2)))
        ns = await client.call_tool("trace", _request(str(tiny_gpt2), backend="nnsight", mode="approx"))
        ns_exact = await client.call_tool("trace", _request(str(tiny_gpt2), backend="nnsight"))
        assert not hf.is_error and not ns.is_error and not ns_exact.is_error, ns.content
        assert _close(await _restored(client, ns_exact.structured_content), await _restored(client, hf.structured_content))
        assert ns.structured_content["models"][0]["readings"]["approx"]  # approx checked itself through nnsight


async def test_a_remote_trace_is_a_long_run_seen_from_a_second_connection(lab, tiny_gpt2, ndif):
    server = build_server(lab=lab)
    async with Client(server, raise_exceptions=True) as client:
        local = await client.call_tool("trace", _request(str(tiny_gpt2)))
        with anyio.fail_after(120):
            started = await client.call_tool("trace", {**_request(str(tiny_gpt2), backend="nnsight", remote=True),
                                                       "wait": False})
            assert not started.is_error, started.content
            run_id = started.structured_content["run_id"]
            waiting = await _poll(client, run_id, lambda s: "NDIF job" in str(s.get("progress")))
            assert waiting["status"] == "running" and "job-1" in json.dumps(waiting["progress"])
            async with Client(build_server(lab=lab), raise_exceptions=True) as second:  # a client reconnecting
                seen = (await second.call_tool("run_status", {"run_id": run_id})).structured_content
                assert seen["status"] == "running" and "NDIF job" in json.dumps(seen["progress"])
                ndif.hold = False
                done = await _poll(second, run_id, _finished)
        assert done["status"] == "complete", done
        assert _close(await _restored(client, done["result"]), await _restored(client, local.structured_content))


async def test_a_second_connection_polling_as_the_run_closes_gets_the_kept_result(lab, tiny_gpt2, monkeypatch):
    opened = RunStore.open_run

    @contextmanager
    def closes_then_stalls(store, *args, **kwargs):  # the worker thread descheduled right after the close
        with opened(store, *args, **kwargs) as run:
            yield run
        time.sleep(0.3)

    monkeypatch.setattr(RunStore, "open_run", closes_then_stalls)
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        with anyio.fail_after(120):
            started = await client.call_tool("trace", {**_request(str(tiny_gpt2)), "wait": False})
            run_id = started.structured_content["run_id"]
            await _poll(client, run_id, lambda s: "manifest" in s)  # its directory exists: others can see it
            async with Client(build_server(lab=lab), raise_exceptions=True) as second:
                done = await _poll(second, run_id, _finished)
        assert done["status"] == "complete" and done["result"]["run_id"] == run_id


async def test_a_remote_trace_is_cancelled_through_run_status(lab, tiny_gpt2, ndif):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        with anyio.fail_after(120):
            started = await client.call_tool("trace", {**_request(str(tiny_gpt2), backend="nnsight", remote=True),
                                                       "wait": False})
            run_id = started.structured_content["run_id"]
            await _poll(client, run_id, lambda s: "NDIF job" in str(s.get("progress")))
            await client.call_tool("run_status", {"run_id": run_id, "cancel": True})
            done = await _poll(client, run_id, _finished)
        assert done["status"] == "cancelled", done
        jobs = await client.read_resource(f"neurotrace://runs/{run_id}/artifacts/remote_jobs.json")
        assert json.loads(jobs.contents[0].text)["records"][0]["status"] == "RUNNING"


async def test_remote_without_a_key_is_a_tool_error_naming_the_setting(lab, tiny_gpt2, monkeypatch):
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        bad = await client.call_tool("trace", _request(str(tiny_gpt2), backend="nnsight", remote=True))
        assert bad.is_error and "NDIF_API_KEY" in bad.content[0].text and "Fix:" in bad.content[0].text
