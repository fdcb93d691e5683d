"""Issue 23 item 5: SIGTERM during a waited stdio call ends its run ``cancelled`` (not ``running``, later
``interrupted``), within the 2 s the server gives its workers, even mid way through a long method."""

import json
import signal
import time

from tests.e2e.test_tasks_wire import Pipe

LONG = {"request": {"parts": ["circuits"], "seeds": 2, "samples": 20000, "ig_steps": 2048}}


def test_sigterm_during_a_waited_call_leaves_its_run_cancelled(tmp_path):
    pipe = Pipe(tmp_path)
    try:
        pipe.request(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                       "clientInfo": {"name": "t", "version": "0"}})
        pipe.proc.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
        pipe.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                          "params": {"name": "benchmark", "arguments": LONG}}).encode() + b"\n")
        pipe.proc.stdin.flush()
        runs = tmp_path / "runs"
        deadline = time.monotonic() + 120
        manifest = None
        while time.monotonic() < deadline:
            found = list(runs.glob("*-benchmark-*/manifest.json")) if runs.exists() else []
            if found and json.loads(found[0].read_text(encoding="utf-8"))["status"] == "running":
                manifest = found[0]
                break
            time.sleep(0.2)
        assert manifest is not None, "the benchmark never started"
        time.sleep(3.0)  # inside a long integrated-gradients path
        pipe.proc.send_signal(signal.SIGTERM)
        pipe.proc.wait(timeout=30)
        data = json.loads(manifest.read_text(encoding="utf-8"))
        assert data["status"] == "cancelled", data
    finally:
        if pipe.proc.poll() is None:
            pipe.close()
