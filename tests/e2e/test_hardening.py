"""Issue 12 end to end: neurotrace-mcp as a subprocess, driven over real stdio pipes and real HTTP."""

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio
SERVER = [sys.executable, "-m", "neurotrace.server"]
TOKEN = "e2e-token-0123456789abcdef"


def _env(tmp_path, **extra) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "NEUROTRACE_RUNS_DIR": str(tmp_path / "runs"), **extra}


class Pipe:
    """A stdio server process with line-at-a-time replies (each read bounded in time)."""

    def __init__(self, tmp_path) -> None:
        self.proc = subprocess.Popen([*SERVER, "--transport", "stdio"], env=_env(tmp_path), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout], daemon=True).start()

    def send(self, text: str) -> dict:
        self.proc.stdin.write(text.encode("utf-8") + b"\n")
        self.proc.stdin.flush()
        return json.loads(self.lines.get(timeout=60))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def test_unparseable_stdio_lines_get_json_rpc_errors_and_the_server_keeps_serving(tmp_path):
    pipe = Pipe(tmp_path)
    try:
        assert pipe.send("this is not json") == {"jsonrpc": "2.0", "id": None, "error": pipe_error(-32700)}
        surrogate = '{"jsonrpc": "2.0", "id": 7, "method": "ping", "params": {"x": "\\ud800"}}'
        reply = pipe.send(surrogate)
        assert reply["id"] == 7 and reply["error"]["code"] == -32600
        deep = '{"jsonrpc": "2.0", "id": "d", "method": "ping", "params": {"x": ' + "[" * 300 + "]" * 300 + "}}"
        reply = pipe.send(deep)
        assert reply["id"] == "d" and reply["error"]["code"] in (-32600, -32700)
        assert pipe.send("[1, 2") ["error"]["code"] == -32700
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
        assert pipe.send(json.dumps(init))["result"]["serverInfo"]["name"] == "neurotrace"
        pipe.proc.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
        level = pipe.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel",
                                      "params": {"level": "debug"}}))
        assert level["id"] == 2 and "result" in level, level  # legacy clients may set the log level
    finally:
        pipe.close()


def pipe_error(code: int) -> dict:
    return {"code": code, "message": "Parse error: the line is not JSON. Fix: send one JSON-RPC 2.0 message per "
                                     "line (UTF-8)"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    raise AssertionError("server did not start")


def test_a_non_loopback_bind_needs_allow_remote_and_a_token(tmp_path):
    refused = subprocess.run([*SERVER, "--transport", "http", "--host", "0.0.0.0", "--port", str(_free_port())],
                             env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "--allow-remote" in refused.stderr
    env = {k: v for k, v in _env(tmp_path).items() if k != "NEUROTRACE_TOKEN"}
    no_token = subprocess.run([*SERVER, "--transport", "http", "--host", "0.0.0.0", "--allow-remote", "--port",
                               str(_free_port())], env=env, capture_output=True, text=True, timeout=120)
    assert no_token.returncode != 0 and "token" in no_token.stderr


def _post(port: int, headers: dict[str, str]) -> int:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/mcp", data=body, method="POST", headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_a_remote_bind_keeps_host_and_origin_checks_and_requires_the_bearer_token(tmp_path, tiny_gpt2):
    port = _free_port()
    proc = subprocess.Popen([*SERVER, "--transport", "http", "--host", "0.0.0.0", "--allow-remote", "--port",
                             str(port)], env=_env(tmp_path, NEUROTRACE_TOKEN=TOKEN), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _wait_port(proc, port)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert _post(port, {}) == 401
        assert _post(port, {"Authorization": "Bearer wrong-token-0123456789"}) == 401
        assert _post(port, {**auth, "Host": "evil.example:80"}) == 421
        assert _post(port, {**auth, "Origin": "http://evil.example"}) == 403
        http = httpx2.AsyncClient(headers=auth, timeout=60)
        with anyio.fail_after(120):
            async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as client:
                listed = await client.call_tool("list_models", {})
                assert not listed.is_error
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        banner = proc.stderr.read().decode()
        proc.stderr.close()
    assert f":{port}/mcp" in banner and "WARNING" in banner


def _running_manifest(runs_dir, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for manifest in runs_dir.glob("*-benchmark-*/manifest.json"):
            data = json.loads(manifest.read_text(encoding="utf-8"))
            if data["status"] == "running":
                return data
        time.sleep(0.2)
    raise AssertionError("no running benchmark run appeared")


def _status_after(runs_dir, run_id: str, wait_s: float) -> str:
    deadline = time.monotonic() + wait_s
    status = "running"
    while time.monotonic() < deadline:
        status = json.loads((runs_dir / run_id / "manifest.json").read_text(encoding="utf-8"))["status"]
        if status != "running":
            break
        time.sleep(0.1)
    return status


async def _call_until_the_server_dies(client: Client) -> None:
    with contextlib.suppress(MCPError):
        await client.call_tool("benchmark", {"request": {"seeds": 64}})


async def _start_long_call(tmp_path, signum: int) -> tuple[str, StdioServerParameters]:
    params = StdioServerParameters(command=SERVER[0], args=[*SERVER[1:], "--transport", "stdio"], env=_env(tmp_path))
    run_id = ""
    with anyio.fail_after(180):
        async with Client(params) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_call_until_the_server_dies, client)
                manifest = await anyio.to_thread.run_sync(_running_manifest, tmp_path / "runs")
                run_id = manifest["run_id"]
                os.kill(manifest["owner"]["pid"], signum)
                await anyio.sleep(0.5)
                tg.cancel_scope.cancel()
    return run_id, params


async def test_sigterm_mid_run_cancels_it_within_a_few_seconds(tmp_path):
    run_id, _ = await _start_long_call(tmp_path, signal.SIGTERM)
    assert _status_after(tmp_path / "runs", run_id, 30.0) == "cancelled"  # generous: CI machines are shared


async def test_a_killed_server_leaves_its_run_interrupted_after_a_restart(tmp_path):
    run_id, params = await _start_long_call(tmp_path, signal.SIGKILL)
    with anyio.fail_after(120):
        async with Client(params) as client:
            page = json.loads((await client.read_resource("neurotrace://runs")).contents[0].text)
    assert {r["run_id"]: r["status"] for r in page["runs"]}[run_id] == "interrupted"
