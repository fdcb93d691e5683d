"""Issue 23 item 1: the real MCP Inspector CLI (2.12.0, the version the issue was found with) calls every
tool of neurotrace-mcp over stdio and over streamable HTTP, and gets a result (no protocol error, no
``isError``) from each. Inspector 2.12 declares ``io.modelcontextprotocol/tasks`` at a handshake-era
initialize, which used to turn every experiment tool's reply into -32603. The Inspector is installed once
(``npm install`` into a temporary prefix, the package ``npx`` would run); skipped, with the reason, where
npm is absent or cannot install it (no npm registry)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests.e2e._every_tool import PLAN, fill

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
SERVER = [sys.executable, "-m", "neurotrace.server"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inspector(tmp_path_factory) -> list[str]:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm/node are not installed: the Inspector CLI cannot run here")
    prefix = tmp_path_factory.mktemp("inspector")
    try:
        done = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error",
                               INSPECTOR], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm could not install {INSPECTOR} within 600 s")
    exe = prefix / "node_modules" / ".bin" / "mcp-inspector"
    if done.returncode != 0 or not exe.exists():
        pytest.skip(f"npm could not install {INSPECTOR}: {(done.stderr or done.stdout)[-300:]}")
    return [str(exe), "--cli"]


def _cli_args(tool: str, args: dict) -> list[str]:
    out = ["--method", "tools/call", "--tool-name", tool]
    for key, value in args.items():
        out += ["--tool-arg", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return out


def _reply(proc: subprocess.CompletedProcess, tool: str, fresh_process: bool) -> dict:
    start = proc.stdout.find("{")
    assert start >= 0, (tool, proc.stdout[-2000:], proc.stderr[-3000:])
    reply = json.loads(proc.stdout[start:])
    assert "error" not in reply, (tool, json.dumps(reply)[:1500])
    assert reply.get("content"), (tool, reply)
    if fresh_process and tool == "release_model":  # a new stdio server has nothing loaded: a typed error
        assert reply.get("isError") and "is not loaded" in reply["content"][0]["text"], reply
        return reply
    assert proc.returncode == 0 and not reply.get("isError"), (tool, json.dumps(reply)[:1500])
    return reply


# Shared CI machines can be slow. (The CLI's tools/call keeps the SDK's 60 s request timeout whatever the
# config says, so every call in PLAN is small: seconds on an idle 2-core machine.)
TIMEOUTS = {"requestTimeout": 600_000, "connectionTimeout": 240_000}


def _config(tmp_path, entry: dict) -> list[str]:
    """A session config file for the one server, and the CLI options that name it."""
    path = tmp_path / "inspector.json"
    path.write_text(json.dumps({"mcpServers": {"neurotrace": {**entry, **TIMEOUTS}}}), encoding="utf-8")
    return ["--config", str(path), "--server", "neurotrace"]


def _every_tool(inspector: list[str], target: list[str], cwd, fresh_process: bool) -> set[str]:
    runs: dict[str, str] = {}
    listed = _tools(inspector, target, cwd)
    for tool in sorted(listed - {t for _, t, _ in PLAN}):  # a tool newer than PLAN: its typed refusal
        proc = subprocess.run([*inspector, *target, *_cli_args(tool, {"request": {}})], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=cwd)
        reply = json.loads(proc.stdout[proc.stdout.find("{"):]) if "{" in proc.stdout else {}
        assert "error" not in reply and "Fix:" in json.dumps(reply.get("content")), (tool, proc.stderr[-1500:])
    for key, tool, args in PLAN:
        proc = subprocess.run([*inspector, *target, *_cli_args(tool, fill(args, runs))], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=cwd)
        run_id = (_reply(proc, tool, fresh_process).get("structuredContent") or {}).get("run_id")
        if run_id:
            runs[key] = run_id
    return {tool for _, tool, _ in PLAN} | listed


def _tools(inspector: list[str], target: list[str], cwd) -> set[str]:
    proc = subprocess.run([*inspector, *target, "--method", "tools/list"], capture_output=True, text=True,
                          timeout=300, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {t["name"] for t in json.loads(proc.stdout[proc.stdout.find("{"):])["tools"]}


def test_the_inspector_cli_calls_every_tool_over_stdio(inspector, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    target = _config(tmp_path, {"command": SERVER[0], "args": [*SERVER[1:], "--runs-dir", str(tmp_path / "runs")],
                                "env": env})
    called = _every_tool(inspector, target, tmp_path, fresh_process=True)
    assert called == _tools(inspector, target, tmp_path)  # every tool the server lists was called


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_inspector_cli_calls_every_tool_over_http(inspector, tmp_path):
    port = _free_port()
    proc = subprocess.Popen([*SERVER, "--transport", "http", "--port", str(port), "--runs-dir", str(tmp_path / "runs")],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        target = _config(tmp_path, {"type": "http", "url": f"http://127.0.0.1:{port}/mcp"})
        assert _every_tool(inspector, target, tmp_path, fresh_process=False) == _tools(inspector, target, tmp_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
