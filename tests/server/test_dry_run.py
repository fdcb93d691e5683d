"""Issue 25 item 7 (with 23 item 3's estimator): ``dry_run`` answers a call's cost before the work - forward
rows, peak memory, seconds here from the throughput this server learned from its own runs - and the
seconds are within 2x of the measured time on an embedded model; the first progress message gives the ETA."""

import time

import anyio
import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

pytestmark = pytest.mark.anyio
TRACE = {"request": {"models": ["fact-gpt2"], "pack": "geography", "max_facts": 2, "components": ["resid", "mlp"],
                     "corruption": {"kind": "noise", "samples": 3}}}


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


async def test_a_dry_run_estimates_without_running_and_learns_seconds_within_2x(lab):
    messages: list[str] = []

    async def progress(done, total, message):
        messages.append(message or "")

    async with Client(build_server(lab=lab)) as client:
        with anyio.fail_after(300):
            assert not (await client.call_tool("load_model", {"request": {"model": "fact-gpt2"}})).is_error
            first = await client.call_tool("trace", {**TRACE, "dry_run": True})
            est = first.structured_content["estimate"]
            assert not first.is_error and first.structured_content["status"] == "dry_run"
            assert est["forward_rows"] > 0 and est["peak_bytes"] > 0 and est["memory_limit_bytes"] > 0
            assert not lab.store.root.exists() or not list(lab.store.root.iterdir())  # nothing ran
            assert not (await client.call_tool("trace", TRACE)).is_error      # the server learns its throughput
            second = (await client.call_tool("trace", {**TRACE, "dry_run": True})).structured_content["estimate"]
            started = time.perf_counter()
            again = await client.call_tool("trace", TRACE, progress_callback=progress)
            took = time.perf_counter() - started
    assert not again.is_error and second["forward_rows"] == est["forward_rows"]
    assert second["seconds"] is not None and took / 2 <= second["seconds"] <= took * 2, (second["seconds"], took)
    assert messages and "estimated" in messages[0], messages[:2]


async def test_the_first_call_has_seconds_from_the_start_up_measurement_and_gives_its_eta_first(lab):
    """Before any call of the tool completed, the seconds come from the matmul rate measured at start-up and
    the model's size (issue 25 item 7: the 34-minute trace had no estimate before it started)."""
    from neurotrace.tools import _dryrun

    _dryrun._rates.clear()                       # a fresh server: nothing learned (the rates are per process)
    messages: list[str] = []

    async def progress(done, total, message):
        messages.append(message or "")

    request = {"request": {**TRACE["request"], "pack": "medicine"}}      # a tool/model pair never run here
    async with Client(build_server(lab=lab)) as client:
        with anyio.fail_after(300):
            assert not (await client.call_tool("load_model", {"request": {"model": "fact-gpt2"}})).is_error
            est = (await client.call_tool("trace", {**request, "dry_run": True})).structured_content["estimate"]
            started = time.perf_counter()
            done = await client.call_tool("trace", request, progress_callback=progress)
            took = time.perf_counter() - started
    assert est["seconds"] is not None and est["seconds_basis"].startswith("a prior"), est
    assert not done.is_error and messages and "estimated" in messages[0], messages[:2]
    assert took / 3 <= est["seconds"] <= took * 3, (est["seconds"], took)     # a prior: a looser bar than 2x
    unknown = _dryrun.seconds_for("trace", 10, lab, "no-such/model")
    assert unknown[0] is None and "unknown" in unknown[1]


@pytest.mark.usefixtures("fast_bfloat16")
async def test_seconds_are_learned_per_precision(lab):
    """A float32 call's throughput does not stand for a bfloat16 call's (2-3x apart): each is learned alone."""
    from neurotrace.tools import _dryrun

    _dryrun._rates.clear()
    bf16 = {"request": {**TRACE["request"], "precision": "bfloat16"}}

    async def basis(client, request):
        return (await client.call_tool("trace", {**request, "dry_run": True})).structured_content["estimate"]

    async with Client(build_server(lab=lab)) as client:
        with anyio.fail_after(300):
            assert not (await client.call_tool("trace", TRACE)).is_error
            f32_est, before = await basis(client, TRACE), await basis(client, bf16)
            assert not (await client.call_tool("trace", bf16)).is_error
            after = await basis(client, bf16)
    assert f32_est["seconds_basis"].startswith("this server's last completed trace call on fact-gpt2")
    assert "bfloat16" not in f32_est["seconds_basis"]
    assert before["seconds_basis"].startswith("a prior") and "bfloat16 call is likely" in before["seconds_basis"]
    assert after["seconds_basis"].endswith("in bfloat16") and after["seconds"] is not None
    assert after["forward_rows"] > f32_est["forward_rows"]           # the float32 check's rows are counted


async def test_a_dry_run_of_an_oversize_job_is_the_same_typed_refusal(lab):
    huge = {"request": {"model": "fact-gpt2", "neurons": ["1:3"], "prompts": ["p"] * 100_000,
                        "values": [float(v) for v in range(1000)]}, "dry_run": True}
    async with Client(build_server(lab=lab)) as client:
        with anyio.fail_after(120):
            result = await client.call_tool("clamp_sweep", huge)
            bad = await client.call_tool("trace", {**TRACE, "dry_run": "yes"})
    assert result.is_error and "needs about" in result.content[0].text and "Fix:" in result.content[0].text
    assert bad.is_error and "dry_run: must be true or false" in bad.content[0].text
