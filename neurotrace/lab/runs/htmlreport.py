"""``report.html``: one self-contained, browsable page per run.

The run store writes it when a run completes (:meth:`neurotrace.lab.runs.Run.write_report`): the
summary, the request, the figures inline (PNG as base64 data, so the page needs nothing beside it), the
tables (``tables/*.csv``, sortable by a click on a column header: a few lines of inline JavaScript),
models, versions, and a relative link to every artifact, so the page also works as an index of the run
directory when opened from disk. Every text is HTML-escaped; no external resource is ever referenced.

:func:`render_index` is the demo's page: one section per step, linking each step's own report.
"""

import base64
import csv
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

MAX_TABLES = 8
MAX_ROWS = 300
MAX_FIGURES = 24

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1180px;padding:1.5em;
color:#1d1d1f;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.6em 0 .5em;border-bottom:1px solid #ddd}
.meta{color:#555}.status-complete{color:#0a7d2c}.status-failed{color:#b00020}
pre{background:#f6f8fa;padding:.8em;overflow:auto;border-radius:6px;font-size:13px}
.summary{white-space:pre-wrap;background:#f6f8fa;padding:.8em;border-radius:6px}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:12px;color:#555}
table{border-collapse:collapse;font-size:13px;margin:.4em 0}
th,td{border:1px solid #ddd;padding:2px 8px;text-align:left}
table.sortable th{cursor:pointer;background:#f0f0f3;user-select:none}
th[data-dir=asc]::after{content:' \\25B2'}th[data-dir=desc]::after{content:' \\25BC'}
.scroll{max-height:32em;overflow:auto;display:inline-block;max-width:100%}
.note{font-size:12px;color:#666}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.dataset.dir !== 'asc';
      table.querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = asc ? 'asc' : 'desc';
      var key = function (row) {
        var t = row.cells[col] ? row.cells[col].textContent.trim() : '';
        return (t !== '' && isFinite(t)) ? Number(t) : t;
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var c = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _href(rel: str) -> str:
    return quote(rel, safe="/")


def _page(title: str, body: list[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">', f"<title>{_e(title)}</title>", f"<style>{STYLE}</style>",
        "</head><body>", *body, f"<script>{SORT_JS}</script>", "</body></html>", ""])


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], sortable: bool = True) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    cls = ' class="sortable"' if sortable else ""
    return f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figures(run_dir: Path, artifacts: Sequence[Mapping[str, Any]]) -> list[str]:
    paths = {a["path"] for a in artifacts}
    pngs = [a["path"] for a in artifacts if a["path"].lower().endswith(".png")]
    out = []
    for rel in pngs[:MAX_FIGURES]:
        data = base64.b64encode((run_dir / rel).read_bytes()).decode("ascii")
        svg = rel[:-4] + ".svg"
        links = f'<a href="{_href(rel)}">PNG</a>' + (f' · <a href="{_href(svg)}">SVG</a>' if svg in paths else "")
        out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_e(rel)}">'
                   f"<figcaption>{_e(rel)} · {links}</figcaption></figure>")
    if len(pngs) > MAX_FIGURES:
        out.append(f'<p class="note">{len(pngs) - MAX_FIGURES} more figures: see the artifact list.</p>')
    return out


def _csv_table(run_dir: Path, rel: str) -> str:
    text = (run_dir / rel).read_text(encoding="utf-8", errors="replace")
    delimiter = "\t" if rel.endswith(".tsv") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader, [])
    rows = []
    total = 0
    for row in reader:
        total += 1
        if len(rows) < MAX_ROWS:
            rows.append([_e(cell) for cell in row])
    note = (f'<p class="note">first {MAX_ROWS} of {total} rows; the whole table: '
            f'<a href="{_href(rel)}">{_e(rel)}</a></p>' if total > MAX_ROWS else "")
    return f'<h3>{_e(rel)}</h3>{_table(header, rows)}{note}'


def _tables(run_dir: Path, artifacts: Sequence[Mapping[str, Any]]) -> list[str]:
    rels = [a["path"] for a in artifacts if a["path"].startswith("tables/") and a["path"].endswith((".csv", ".tsv"))]
    out = [_csv_table(run_dir, rel) for rel in rels[:MAX_TABLES]]
    if len(rels) > MAX_TABLES:
        out.append(f'<p class="note">{len(rels) - MAX_TABLES} more tables: see the artifact list.</p>')
    return out


def _artifact_rows(artifacts: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = [['<a href="request.json">request.json</a>', "application/json", "", ""],
            ['<a href="manifest.json">manifest.json</a>', "application/json", "", ""]]
    for a in artifacts:
        rows.append([f'<a href="{_href(a["path"])}">{_e(a["path"])}</a>', _e(a["media_type"]), str(a["bytes"]),
                     f'<code>{_e(a["sha256"][:12])}</code>'])
    return rows


def _header(manifest: Mapping[str, Any]) -> list[str]:
    status = manifest.get("status", "")
    return [f"<h1>{_e(manifest.get('tool', 'run'))} · <code>{_e(manifest.get('run_id', ''))}</code></h1>",
            f'<p class="meta">status <b class="status-{_e(status)}">{_e(status)}</b> · created '
            f"{_e(manifest.get('created', ''))} · seed {_e(manifest.get('seed'))}</p>"]


def _provenance(manifest: Mapping[str, Any]) -> list[str]:
    out = []
    if manifest.get("models"):
        out += ["<h2>Models</h2>", _table(["model", "fingerprint"],
                                          [[_e(k), f"<code>{_e(v)}</code>"] for k, v in manifest["models"].items()])]
    if manifest.get("inputs"):
        links = "".join(f'<li><a href="../{_href(r)}/report.html">{_e(r)}</a></li>' for r in manifest["inputs"])
        out += ["<h2>Runs this run read</h2>", f"<ul>{links}</ul>"]
    if manifest.get("versions"):
        out += ["<h2>Versions</h2>", _table(["package", "version"],
                                            [[_e(k), _e(v)] for k, v in manifest["versions"].items()], sortable=False)]
    return out


def _views(run_dir: Path, artifacts: Sequence[Mapping[str, Any]]) -> list[str]:
    """Interactive views the run wrote itself (``views/*.html``), each in a sandboxed frame (scripts only)."""
    out = []
    for a in artifacts:
        rel = a["path"]
        if rel.startswith("views/") and rel.endswith(".html") and (run_dir / rel).is_file():
            page = (run_dir / rel).read_text(encoding="utf-8")
            out.append(f'<iframe sandbox="allow-scripts" style="width:100%;height:680px;border:1px solid #ddd" '
                       f'title="{_e(rel)}" srcdoc="{_e(page)}"></iframe><p class="note"><a href="{_href(rel)}">'
                       f"{_e(rel)}</a></p>")
    return ["<h2>Interactive view</h2>", *out] if out else []


def render_report(run_dir: Path | str, manifest: Mapping[str, Any]) -> str:
    """The report page of the run in ``run_dir`` whose manifest (as JSON data) is ``manifest``."""
    run_dir = Path(run_dir)
    artifacts = [a for a in manifest.get("artifacts", []) if a["path"] != "report.html"]
    request_path = run_dir / "request.json"
    request = request_path.read_text(encoding="utf-8") if request_path.is_file() else "{}"
    body = _header(manifest)
    if manifest.get("summary"):
        body += ["<h2>Summary</h2>", f'<div class="summary">{_e(manifest["summary"])}</div>']
    body += _views(run_dir, artifacts)
    for rel in sorted(a["path"] for a in artifacts if a["path"].startswith("sections/") and a["path"].endswith(".html")):
        body.append((run_dir / rel).read_text(encoding="utf-8"))   # written escaped by the run's own code
    figures = _figures(run_dir, artifacts)
    if figures:
        body += ["<h2>Figures</h2>", *figures]
    tables = _tables(run_dir, artifacts)
    if tables:
        body += ["<h2>Tables</h2>", '<p class="note">Click a column header to sort.</p>', *tables]
    body += ["<h2>Request</h2>", f"<pre>{_e(request)}</pre>"]
    body += _provenance(manifest)
    body += ["<h2>Artifacts</h2>", _table(["path", "media type", "bytes", "sha256"], _artifact_rows(artifacts))]
    return _page(f"neurotrace {manifest.get('tool', '')} {manifest.get('run_id', '')}", body)


def render_index(title: str, steps: Sequence[Mapping[str, Any]]) -> str:
    """An index page linking each step's report: ``steps`` rows have title, run_id and summary."""
    body = [f"<h1>{_e(title)}</h1>", '<p class="meta">Each step is one tool call with its own run directory '
            "and report.</p>"]
    rows = []
    for i, step in enumerate(steps, start=1):
        run_id = step.get("run_id")
        link = f'<a href="../{_href(run_id)}/report.html">{_e(run_id)}</a>' if run_id else ""
        first = (step.get("summary") or "").strip().splitlines()
        rows.append([str(i), _e(step.get("title", "")), link, _e(first[0][:160] if first else "")])
    body.append(_table(["#", "step", "run (report)", "summary"], rows))
    for i, step in enumerate(steps, start=1):
        body += [f"<h2>{i}. {_e(step.get('title', ''))}</h2>",
                 f'<div class="summary">{_e((step.get("summary") or "").strip())}</div>']
    return _page(title, body)
