"""report.html: written on completion, self-contained, escaped, figures inline, sortable tables, links."""

import base64
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from neurotrace import cli  # noqa: E402
from neurotrace.lab.errors import Cancelled  # noqa: E402
from neurotrace.lab.runs import RunStore, media_type  # noqa: E402
from neurotrace.lab.runs.htmlreport import MAX_ROWS, render_index  # noqa: E402


def _run_with_everything(store: RunStore) -> str:
    with store.open_run("trace", {"models": ["fact-gpt2"], "note": "<b>x</b>"}, seed=3) as run:
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        run.write_figure("figures/curve.png", fig)
        run.write_csv("tables/cells.csv", [{"layer": i, "effect": (i * 7) % 5} for i in range(MAX_ROWS + 5)])
        run.write_json("trace_results.json", {"ok": True})
        run.add_model("fact-gpt2", "abc123")
        run.add_input("20260101T000000000000Z-generate_facts-0123abcd")
        run.set_summary("Trace: <script>alert(1)</script> peak at layer 2")
    return run.run_id


def test_a_completed_run_writes_report_html_listed_in_its_manifest(tmp_path):
    store = RunStore(tmp_path)
    run_id = _run_with_everything(store)
    entry = {a.path: a for a in store.manifest(run_id).artifacts}["report.html"]
    assert entry.media_type == "text/html" and store.artifact_path(run_id, "report.html").is_file()


def test_the_report_inlines_figures_and_references_nothing_outside(tmp_path):
    store = RunStore(tmp_path)
    run_id = _run_with_everything(store)
    page = store.artifact_path(run_id, "report.html").read_text(encoding="utf-8")
    png = (tmp_path / run_id / "figures/curve.png").read_bytes()
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:") for s in sources)
    assert "http://" not in page and "https://" not in page


def test_the_report_links_every_artifact_by_relative_path(tmp_path):
    store = RunStore(tmp_path)
    run_id = _run_with_everything(store)
    page = store.artifact_path(run_id, "report.html").read_text(encoding="utf-8")
    hrefs = set(re.findall(r'href="([^"]*)"', page))
    for a in store.manifest(run_id).artifacts:
        if a.path != "report.html":
            assert a.path in hrefs
            assert (tmp_path / run_id / a.path).is_file()
    assert {"request.json", "manifest.json", "../20260101T000000000000Z-generate_facts-0123abcd/report.html"} <= hrefs


def test_the_report_escapes_summary_and_request_text(tmp_path):
    store = RunStore(tmp_path)
    page = store.artifact_path(_run_with_everything(store), "report.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page


def test_long_tables_are_cut_with_a_link_to_the_whole_csv_and_are_sortable(tmp_path):
    store = RunStore(tmp_path)
    page = store.artifact_path(_run_with_everything(store), "report.html").read_text(encoding="utf-8")
    assert f"first {MAX_ROWS} of {MAX_ROWS + 5} rows" in page
    assert '<table class="sortable"><thead><tr><th>layer</th><th>effect</th>' in page
    assert "addEventListener('click'" in page


def test_every_figure_is_written_as_png_and_svg_and_the_png_uri_is_returned(tmp_path):
    store = RunStore(tmp_path)
    with store.open_run("plot", {}) as run:
        fig, _ = plt.subplots()
        uri = run.write_figure("figures/a.png", fig)
    assert uri.endswith("/artifacts/figures/a.png")
    types = {a.path: a.media_type for a in store.manifest(run.run_id).artifacts}
    assert types["figures/a.png"] == "image/png" and types["figures/a.svg"] == "image/svg+xml"
    assert (tmp_path / run.run_id / "figures/a.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_runs_that_do_not_complete_get_no_report(tmp_path, status):
    store = RunStore(tmp_path)
    with pytest.raises((RuntimeError, Cancelled)):
        with store.open_run("trace", {}) as run:
            raise Cancelled("stop") if status == "cancelled" else RuntimeError("boom")
    assert store.manifest(run.run_id).status == status
    assert not (tmp_path / run.run_id / "report.html").exists()


def test_html_and_svg_have_their_media_types():
    assert media_type("report.html") == "text/html" and media_type("figures/x.svg") == "image/svg+xml"


def test_the_index_links_each_step_report():
    page = render_index("demo", [{"title": "Trace <1>", "run_id": "r1", "summary": "peak\nmore"},
                                 {"title": "No run", "run_id": None, "summary": ""}])
    assert '<a href="../r1/report.html">r1</a>' in page and "Trace &lt;1&gt;" in page


def test_show_open_opens_the_report_in_a_browser(tmp_path, monkeypatch, capsys):
    opened = []
    monkeypatch.setattr(cli.webbrowser, "open", opened.append)
    store = RunStore(tmp_path)
    run_id = _run_with_everything(store)
    assert cli.main(["--runs-dir", str(tmp_path), "show", run_id, "--open"]) == 0
    assert opened == [(tmp_path / run_id / "report.html").resolve().as_uri()]
    assert '"status": "complete"' in capsys.readouterr().out


def test_the_same_figure_gives_the_same_svg_bytes(tmp_path):
    store = RunStore(tmp_path)
    svgs = []
    for _ in range(2):
        with store.open_run("plot", {}) as run:
            fig, ax = plt.subplots()
            ax.imshow([[0, 1], [1, 0]])
            run.write_figure("figures/a.png", fig)
        svgs.append((tmp_path / run.run_id / "figures/a.svg").read_bytes())
    assert svgs[0] == svgs[1]
