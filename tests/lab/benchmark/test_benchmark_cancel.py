"""Issue 23 item 6: cancelling the benchmark stops it within 2 s (a final manifest says cancelled), with
progress reported meanwhile, even where one method's scoring runs long (many samples x IG steps)."""

import threading
import time

from neurotrace import Lab, LabSettings
from neurotrace.lab.benchmark.run import run_benchmark
from neurotrace.lab.benchmark.schema import BenchmarkRequest
from neurotrace.lab.errors import Cancelled
from neurotrace.lab.progress import Reporter


def test_a_long_benchmark_stops_within_two_seconds_of_its_cancel(tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    notes: list[float] = []
    reporter = Reporter(on_progress=lambda done, total, msg: notes.append(time.monotonic()))
    request = BenchmarkRequest(parts=["circuits"], seeds=2, samples=20_000, ig_steps=2048)
    outcome: list[BaseException | None] = []

    def work() -> None:
        try:
            run_benchmark(request, lab=lab, reporter=reporter)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 (recorded for the assertion)
            outcome.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    deadline = time.monotonic() + 60
    while len(notes) < 6 and time.monotonic() < deadline:  # well inside the first seed's IG
        time.sleep(0.05)
    assert len(notes) >= 6, "no progress within a minute"
    cancelled_at = time.monotonic()
    reporter.cancel()
    worker.join(timeout=30)
    latency = time.monotonic() - cancelled_at
    assert isinstance(outcome[0], Cancelled)
    assert latency <= 2.0, f"stopped {latency:.1f} s after its cancel"
    run = next((tmp_path / "runs").iterdir())
    assert '"status": "cancelled"' in (run / "manifest.json").read_text(encoding="utf-8")
