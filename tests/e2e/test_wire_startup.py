"""Issue 23 items 12 and 13 on real processes: invalid JSON-RPC ids are answered -32600 over stdio, and the
HTTP start-up problems (a missing --token-file, a 127.0.0.2 bind, the remote-bind warning)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from tests.e2e.test_tasks_wire import Pipe

SERVER = [sys.executable, "-m", "neurotrace.server"]


def test_requests_with_an_invalid_id_get_invalid_request_and_the_server_goes_on(tmp_path):
    pipe = Pipe(tmp_path)
    try:
        for bad in ({"a": 1}, [1], 1.5, None, True):
            line = json.dumps({"jsonrpc": "2.0", "id": bad, "method": "ping"}).encode() + b"\n"
            pipe.proc.stdin.write(line)
            pipe.proc.stdin.flush()
            reply = json.loads(pipe.lines.get(timeout=90))
            assert reply["id"] is None and reply["error"]["code"] == -32600 and "id must be" in reply["error"]["message"]
        init = pipe.request(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                              "clientInfo": {"name": "t", "version": "0"}})
        assert init["result"]["serverInfo"]["name"] == "neurotrace"
    finally:
        pipe.close()


def _env(tmp_path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "NEUROTRACE_RUNS_DIR": str(tmp_path / "runs")}


def test_a_missing_token_file_is_a_one_line_error_not_a_traceback(tmp_path):
    done = subprocess.run([*SERVER, "--transport", "http", "--token-file", str(tmp_path / "no" / "token.txt")],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--token-file: cannot read 'token.txt'" in done.stderr and "Fix:" in done.stderr, done.stderr[-500:]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def test_a_bind_on_another_loopback_address_accepts_its_own_host_header(tmp_path):
    host = "127.0.0.2"
    port = _free_port(host)
    proc = subprocess.Popen([*SERVER, "--transport", "http", "--host", host, "--port", str(port)], env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((host, port)) == 0:
                    break
            time.sleep(0.2)
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
        req = urllib.request.Request(f"http://{host}:{port}/mcp", data=body.encode(), headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
        with urllib.request.urlopen(req, timeout=60) as resp:  # the Host header is 127.0.0.2:port
            assert resp.status == 200 and b"neurotrace" in resp.read()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_remote_bind_warning_says_clients_need_allowed_host(capsys):
    from neurotrace.transport import announce

    announce("0.0.0.0", 8765, "t" * 20)
    err = capsys.readouterr().err
    assert "WARNING" in err and "--allowed-host" in err
