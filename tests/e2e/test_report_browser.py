"""A trace run's report.html in a real headless Chromium: not blank, every image loads, no console errors.

Chromium comes from Debian's packages (``scripts/test.sh`` installs it when apt is available); without it
these tests skip with the reason.
"""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neurotrace import Lab, LabSettings, TraceRequest, run_trace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")

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
