"""Issue 23 item 14 over real HTTP: a client that drops its connection while a waited tools/call runs
cancels that call (the run ends ``cancelled`` within seconds, not minutes later ``complete``). The client is
a plain HTTP client speaking the session-era (2025-11-25) streamable HTTP wire, as a crashed agent or a
closed browser tab would leave it: no ``notifications/cancelled``, just a closed socket."""

import json
import os
import socket
import subprocess
import sys
import time

import httpx

SERVER = [sys.executable, "-m", "neurotrace.server"]
LONG = {"request": {"parts": ["circuits"], "seeds": 2, "samples": 20000, "ig_steps": 2048}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert proc.poll() is None, "the server exited"
        time.sleep(0.2)
    raise AssertionError("the server never listened")


def _manifest(runs, pattern: str) -> dict | None:
    found = list(runs.glob(pattern)) if runs.exists() else []
    return json.loads(found[0].read_text(encoding="utf-8")) if found else None


def test_an_http_client_that_disconnects_cancels_its_waited_call(tmp_path):
    port, runs = _free_port(), tmp_path / "runs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NEUROTRACE_RUNS_DIR": str(runs)}
    proc = subprocess.Popen([*SERVER, "--transport", "http", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        _wait_for(port, proc)
        client = httpx.Client(timeout=60)
        init = client.post(url, headers=HEADERS, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
        assert init.status_code == 200, init.text
        session = {**HEADERS, "Mcp-Session-Id": init.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
        assert client.post(url, headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
                           ).status_code == 202
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "benchmark", "arguments": LONG}}
        with client.stream("POST", url, headers=session, json=call) as reply:
            assert reply.status_code == 200
            deadline = time.monotonic() + 120
            while (m := _manifest(runs, "*-benchmark-*/manifest.json")) is None or m["status"] != "running":
                assert time.monotonic() < deadline, "the benchmark never started"
                time.sleep(0.2)
            time.sleep(1.0)   # well inside the long method
        client.close()        # the connection goes, with no word to the server
        deadline = time.monotonic() + 20
        while (m := _manifest(runs, "*-benchmark-*/manifest.json"))["status"] == "running":
            assert time.monotonic() < deadline, "the call ran on after its client left"
            time.sleep(0.2)
        assert m["status"] == "cancelled", m
        assert proc.poll() is None   # the server itself serves on
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
