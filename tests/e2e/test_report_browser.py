"""A trace run's report.html in a real headless Chromium: not blank, every image loads, no console errors.

Chromium comes from Debian's packages (``scripts/test.sh`` installs it when apt is available); without it
these tests skip with the reason.
"""

import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neurotrace import Lab, LabSettings, TraceRequest, run_trace
from neurotrace.tools._report_ui import VIEWER

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]

#: injected first in <head>: records uncaught errors and console.error calls
CATCH = ("<script>window.__ntErrors=[];window.addEventListener('error',function(e){__ntErrors.push(String(e.message))});"
         "var __ce=console.error;console.error=function(){__ntErrors.push([].join.call(arguments,' '));"
         "__ce.apply(console,arguments)};</script>")
#: injected last in <body>: after load, writes what it saw into the DOM for --dump-dom
PROBE = ("<script>window.addEventListener('load',function(){var imgs=[].slice.call(document.images);"
         "var d=document.createElement('div');d.id='nt-probe';d.setAttribute('data-images',imgs.length);"
         "d.setAttribute('data-broken',imgs.filter(function(i){return !(i.complete&&i.naturalWidth>0)}).length);"
         "d.setAttribute('data-errors',__ntErrors.length);d.textContent=__ntErrors.join(' | ');"
         "document.body.appendChild(d)});</script>")


@pytest.fixture(scope="module")
def trace_report(tmp_path_factory) -> Path:
    lab = Lab(LabSettings.from_env(runs_dir=tmp_path_factory.mktemp("runs")))
    request = TraceRequest.model_validate({"models": ["fact-gpt2"], "pack": "geography", "max_facts": 2,
                                           "corruption": {"kind": "noise", "samples": 2}})
    result = run_trace(request, lab=lab)
    return lab.store.artifact_path(result.run_id, "report.html")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_trace_report_screenshot_is_not_blank_and_logs_no_console_messages(trace_report, tmp_path):
    shot = tmp_path / "report.png"
    proc = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", trace_report.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1280)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005      # text and figures, not a blank page
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []


def test_every_image_of_the_trace_report_loads_without_script_errors(trace_report, tmp_path):
    page = trace_report.read_text(encoding="utf-8")
    probed = trace_report.with_name("probe.html")        # same folder: relative links resolve the same
    probed.write_text(page.replace("<head>", "<head>" + CATCH, 1).replace("</body>", PROBE + "</body>", 1),
                      encoding="utf-8")
    proc = _chromium(tmp_path, "--dump-dom", probed.as_uri())
    found = re.search(r'<div id="nt-probe" data-images="(\d+)" data-broken="(\d+)" data-errors="(\d+)">([^<]*)',
                      proc.stdout)
    assert found, proc.stderr[-2000:]
    images, broken, errors, messages = int(found[1]), int(found[2]), int(found[3]), found[4]
    assert images >= 3 and broken == 0 and errors == 0, messages


def test_the_report_tables_sort_when_a_header_is_clicked(trace_report, tmp_path):
    page = trace_report.read_text(encoding="utf-8")
    click = ("<script>window.addEventListener('load',function(){var t=document.querySelector('table.sortable');"
             "var th=t.tHead.rows[0].cells[0];th.click();var a=t.tBodies[0].rows[0].cells[0].textContent;th.click();"
             "var d=t.tBodies[0].rows[0].cells[0].textContent;var p=document.createElement('div');p.id='nt-sort';"
             "p.textContent=th.dataset.dir+'|'+a+'|'+d;document.body.appendChild(p)});</script>")
    probed = trace_report.with_name("sort.html")
    probed.write_text(page.replace("</body>", click + "</body>", 1), encoding="utf-8")
    proc = _chromium(tmp_path, "--dump-dom", probed.as_uri())
    found = re.search(r'<div id="nt-sort">(\w+)\|([^|<]*)\|([^<]*)</div>', proc.stdout)
    assert found, proc.stderr[-2000:]
    first_up, first_down = found[2].strip(), found[3].strip()
    try:
        first_up, first_down = float(first_up), float(first_down)
    except ValueError:
        pass
    assert found[1] == "desc" and first_up <= first_down


#: a stand-in MCP Apps host: answers ui/initialize, then posts the tool result into the viewer's frame
HOST = """<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<iframe id="v" src="viewer.html" style="width:1000px;height:700px"></iframe><script>
var RESULT = %s, seen = [], frame = document.getElementById('v');
window.addEventListener('message', function (e) {
  var m = e.data || {}, reply = function (x) { frame.contentWindow.postMessage(x, '*'); };
  seen.push(m.method || 'response');
  if (m.method === 'ui/initialize') { reply({jsonrpc: '2.0', id: m.id, result: {protocolVersion: '2026-01-26',
      hostInfo: {name: 'test-host', version: '1'}, hostCapabilities: {}, hostContext: {}}}); }
  if (m.method === 'ui/notifications/initialized') {
    reply({jsonrpc: '2.0', method: 'ui/notifications/tool-result', params: RESULT}); }
  if (m.method === 'ui/notifications/size-changed') {
    var d = document.createElement('div'); d.id = 'nt-host'; d.textContent = seen.join(',');
    document.body.appendChild(d); }
});
</script></body></html>"""


class DevTools:
    """Chromium driven over the DevTools protocol on a pipe (fds 3/4, NUL-separated JSON): for pages whose
    content arrives after the load event, which --dump-dom would snapshot too early."""

    def __init__(self, profile: Path) -> None:
        theirs_r, ours_w = os.pipe()
        ours_r, theirs_w = os.pipe()

        def on_fds_3_and_4() -> None:
            r, w = os.dup(theirs_r), os.dup(theirs_w)
            os.dup2(r, 3)
            os.dup2(w, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS[:-2], f"--user-data-dir={profile}", "--remote-debugging-pipe"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False,
                                     preexec_fn=on_fds_3_and_4)
        os.close(theirs_r)
        os.close(theirs_w)
        self.w, self.r, self.buf, self.last, self.events = ours_w, ours_r, b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.last += 1
        msg = {"id": self.last, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            assert select.select([self.r], [], [], max(0.0, deadline - time.monotonic()))[0], f"{method}: no answer"
            self.buf += os.read(self.r, 1 << 20)
            *done, self.buf = self.buf.split(b"\0")
            for reply in map(json.loads, done):
                if reply.get("id") == self.last:
                    assert "error" not in reply, reply["error"]
                    return reply["result"]
                self.events.append(reply)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (AssertionError, OSError):
            self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self.w)
        os.close(self.r)


def test_the_apps_viewer_completes_the_handshake_and_loads_the_embedded_report(trace_report, tmp_path):
    result = {"content": [{"type": "text", "text": "summary"},
                          {"type": "resource", "annotations": {"audience": ["user"]},
                           "resource": {"uri": "neurotrace://runs/x/artifacts/report.html", "mimeType": "text/html",
                                        "text": trace_report.read_text(encoding="utf-8")}}]}
    site = tmp_path / "host"
    site.mkdir()
    (site / "viewer.html").write_text(VIEWER, encoding="utf-8")
    (site / "host.html").write_text(HOST % json.dumps(result).replace("</", "<\\/"), encoding="utf-8")
    browser = DevTools(tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Runtime.enable", session=session)
        browser.send("Page.navigate", {"url": (site / "host.html").as_uri()}, session=session)
        seen, deadline = "", time.monotonic() + 60
        while not seen and time.monotonic() < deadline:
            time.sleep(0.2)
            seen = browser.send("Runtime.evaluate", {"expression": "(document.getElementById('nt-host')||{}).textContent"
                                                     " || ''", "returnByValue": True}, session=session)["result"]["value"]
    finally:
        browser.close()
    # the viewer reports its size once the embedded report (figures included) has loaded in its frame
    assert seen.split(",") == ["ui/initialize", "ui/notifications/initialized", "ui/notifications/size-changed"]
    problems = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"
                or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "warning"))]
    assert problems == []
