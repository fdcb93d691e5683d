"""End to end: start neurotrace-mcp as a subprocess and talk to it with the official client."""

import os
import shutil
import socket
import subprocess
import sys
import time

import anyio
import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.anyio


def _server_command() -> list[str]:
    exe = shutil.which("neurotrace-mcp")
    return [exe] if exe else [sys.executable, "-m", "neurotrace.server"]


def _env(tmp_path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "NEUROTRACE_RUNS_DIR": str(tmp_path / "runs")}


async def _exercise(client: Client, model_dir) -> None:
    tools = {t.name for t in (await client.list_tools()).tools}
    assert {"load_model", "list_models"} <= tools
    result = await client.call_tool("load_model", {"request": {"model": str(model_dir)}})
    assert not result.is_error, result.content
    assert result.structured_content["model"]["n_layers"] == 2
    bad = await client.call_tool("load_model", {"request": {"model": "/no/such/dir"}})
    assert bad.is_error and "model:" in bad.content[0].text
    listed = await client.call_tool("list_models", {})
    assert len(listed.structured_content["loaded"]) == 1


async def test_stdio_transport_serves_tools(tmp_path, tiny_gpt2):
    cmd = _server_command()
    params = StdioServerParameters(command=cmd[0], args=[*cmd[1:], "--transport", "stdio"], env=_env(tmp_path))
    with anyio.fail_after(120):
        async with Client(params) as client:
            await _exercise(client, tiny_gpt2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_streamable_http_transport_serves_tools_on_loopback(tmp_path, tiny_gpt2):
    port = _free_port()
    proc = subprocess.Popen([*_server_command(), "--transport", "http", "--port", str(port)], env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stderr.read().decode()
            await anyio.sleep(0.2)
        with anyio.fail_after(120):
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                await _exercise(client, tiny_gpt2)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.stderr.close()
