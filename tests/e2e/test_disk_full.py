"""Issue 23 item 7 on a real full disk: the server's runs directory on a tiny tmpfs, mounted in a private
user+mount namespace (``unshare -rm``: no root needed where the kernel allows user namespaces; skipped
with the reason elsewhere). The test reaches the mount through ``/proc/<server pid>/root``.

On a full disk the server starts (its start-up sweep marks a stale run interrupted without crashing),
serves reads, refuses a call that cannot even open its run (no run directory left behind), and a run that
fills the disk mid-way ends ``failed`` with "disk full" naming the runs directory, its temp files removed.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.anyio
ALL_PACKS = {"request": {"source": {"kind": "pack", "domains": [
    "cybersecurity", "finance", "geography", "known-facts", "law", "medicine", "programming"]}, "models": []}}
ONE_PACK = {"request": {"source": {"kind": "pack", "domains": ["geography"]}, "models": []}}
STALE = "20260101T000000Z-trace-0000abcd"


def _namespaces_work(where: Path) -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare(1) here"
    where.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{where}'"],
                           capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()}"


def _stale_run(stage: Path) -> None:
    """A run left ``running`` by a process that is gone (the start-up sweep must mark it interrupted)."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    run = stage / STALE
    run.mkdir(parents=True)
    (run / "request.json").write_text("{}\n", encoding="utf-8")
    (run / "manifest.json").write_text(json.dumps({
        "run_id": STALE, "tool": "trace", "status": "running", "created": "2026-01-01T00:00:00.000000Z",
        "owner": {"pid": gone.pid, "host": os.uname().nodename, "started": "clk:1"}}), encoding="utf-8")


def _server_root(runs: Path) -> Path:
    """The server's view of the file system (its mount namespace), found by its command line."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"neurotrace.server" in cmd and str(runs).encode() in cmd:
                return proc / "root"
    raise AssertionError("the server process was not found")


def _temps(disk: Path) -> list[str]:
    return [p.name for p in disk.rglob(".*") if p.name != ".parts" or p.is_dir()]


async def test_a_full_runs_disk_fails_the_run_honestly_and_the_server_still_starts_and_reads(tmp_path):
    disk, stage = tmp_path / "disk", tmp_path / "stage"
    reason = _namespaces_work(tmp_path / "probe")
    if reason:
        pytest.skip(reason)
    runs = disk / "runs"
    disk.mkdir()
    _stale_run(stage)
    script = (f"mount -t tmpfs -o size=256k tmpfs '{disk}' && mkdir '{runs}' && cp -a '{stage}/.' '{runs}/' && "
              f"(head -c 1000000 /dev/zero > '{disk}/filler' 2>/dev/null; true) && "
              f"exec '{sys.executable}' -m neurotrace.server --transport stdio --runs-dir '{runs}'")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NEUROTRACE_THREADS": "1"}
    params = StdioServerParameters(command="unshare", args=["-rm", "sh", "-c", script], env=env)
    with anyio.fail_after(120):
        async with Client(params) as client:
            seen = _server_root(runs)
            inside = seen / str(disk).lstrip("/")
            assert shutil.disk_usage(inside).free < 4096   # the disk is full

            listed = json.loads((await client.read_resource("neurotrace://runs")).contents[0].text)
            assert {r["run_id"]: r["status"] for r in listed["runs"]} == {STALE: "interrupted"}
            manifest = json.loads((await client.read_resource(f"neurotrace://runs/{STALE}/manifest")).contents[0].text)
            assert manifest["status"] == "interrupted"
            on_disk = json.loads((inside / "runs" / STALE / "manifest.json").read_text(encoding="utf-8"))
            assert on_disk["status"] == "interrupted"

            refused = await client.call_tool("generate_facts", ONE_PACK)   # no room to open the run at all
            text = refused.content[0].text
            assert refused.is_error and "disk full" in text and str(runs) in text and "bug" not in text, text
            assert sorted(p.name for p in (inside / "runs").iterdir()) == [STALE]   # nothing half-made left

            filler = inside / "filler"
            os.truncate(filler, filler.stat().st_size - 24 * 1024)   # room to open a run, not to finish it
            failed = await client.call_tool("generate_facts", ALL_PACKS)
            text = failed.content[0].text
            assert failed.is_error and "disk full" in text and str(runs) in text, text
            assert "this is a bug" not in text and str(Path.home()) not in text
            run_ids = [p.name for p in (inside / "runs").iterdir() if p.name != STALE]
            assert len(run_ids) == 1
            ended = json.loads((inside / "runs" / run_ids[0] / "manifest.json").read_text(encoding="utf-8"))
            assert ended["status"] == "failed" and "disk full" in ended["error"], ended
            assert _temps(inside) == []   # every temp file of the failed writes is gone
            status = await client.call_tool("run_status", {"run_id": run_ids[0]})
            assert not status.is_error and status.structured_content["status"] == "failed"
