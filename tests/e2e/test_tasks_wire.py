"""Issue 23 item 1 on the real stdio wire: a handshake-era client (as MCP Inspector 2.12 is) that declares
``io.modelcontextprotocol/tasks`` and sends ``params.task`` gets ordinary tool results, one run per call."""

import json
import os
import queue
import subprocess
import sys
import threading

import pytest

SERVER = [sys.executable, "-m", "neurotrace.server", "--transport", "stdio"]
PACK = {"request": {"source": {"kind": "pack", "domains": ["geography"]}, "models": []}}
TASKS = "io.modelcontextprotocol/tasks"


class Pipe:
    def __init__(self, tmp_path) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "NEUROTRACE_RUNS_DIR": str(tmp_path / "runs")}
        self.proc = subprocess.Popen(SERVER, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout], daemon=True).start()

    def request(self, rid: int, method: str, params: dict) -> dict:
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).encode()
                              + b"\n")
        self.proc.stdin.flush()
        while True:
            reply = json.loads(self.lines.get(timeout=90))
            if reply.get("id") == rid:
                return reply

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.mark.parametrize("version", ["2025-11-25", "2025-06-18"])
def test_a_handshake_era_client_declaring_tasks_gets_ordinary_results(tmp_path, version):
    pipe = Pipe(tmp_path)
    try:
        init = pipe.request(1, "initialize", {"protocolVersion": version, "clientInfo": {"name": "t", "version": "0"},
                                              "capabilities": {"extensions": {TASKS: {}}, "tasks": {}}})
        assert TASKS not in json.dumps(init["result"]["capabilities"])  # not advertised where it cannot work
        pipe.proc.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
        plain = pipe.request(2, "tools/call", {"name": "generate_facts", "arguments": PACK})
        asked = pipe.request(3, "tools/call", {"name": "generate_facts", "arguments": PACK, "task": {"ttl": 60000}})
        for reply in (plain, asked):
            assert "error" not in reply, reply
            result = reply["result"]
            assert not result.get("isError") and result["content"] and "task" not in result, result
            assert result["structuredContent"]["run_id"]
        runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
        assert len(runs) == 2 and all(json.loads((tmp_path / "runs" / r / "manifest.json").read_text())["status"]
                                      == "complete" for r in runs)
        unknown = pipe.request(4, "tasks/get", {"taskId": runs[0]})
        assert unknown["error"]["code"] == -32601  # the task methods exist only where tasks do
    finally:
        pipe.close()
