"""Build neurotrace's built-in corpus ``python-docs`` from the Python documentation's reStructuredText sources.

Source: Debian's ``python3.11-doc`` package (3.11.2-6+deb12u9), which ships the CPython 3.11 documentation with
its reStructuredText sources under ``usr/share/doc/python3.11/html/_sources``. The documentation is licensed under
the PSF License Agreement (its code examples also under the Zero-Clause BSD licence); both allow redistribution
with the licence notice, which this script copies next to the corpus.

Usage (no network needed once the package file is here; ``apt-get download`` fetches it from Debian's archive)::

    apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb /tmp/pydoc
    python scripts/build_corpus.py /tmp/pydoc/usr/share/doc/python3.11/html/_sources

It writes ``neurotrace/data/corpus/python-docs.jsonl.gz`` (one JSON object per document: ``{"source", "text"}``,
markup stripped, code and tables left out, paragraphs one per line) and ``python-docs.LICENSE.txt``. The result
is deterministic: the same sources give the same bytes.
"""

import gzip
import io
import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "neurotrace" / "data" / "corpus"
SECTIONS = ("tutorial", "howto", "faq", "reference", "library", "whatsnew", "using", "extending", "glossary")
# directives whose whole body is code, tables, tooling or navigation: left out
SKIP = {"code-block", "code", "sourcecode", "testcode", "testsetup", "testcleanup", "testoutput", "doctest",
        "productionlist", "literalinclude", "highlight", "toctree", "index", "csv-table", "list-table", "table",
        "image", "figure", "raw", "include", "tabularcolumns", "sectionauthor", "moduleauthor", "program",
        "opcode", "grammar-snippet", "availability", "audit-event", "impl-detail", "only", "cmdoption", "envvar",
        "c:macro", "pdbcommand", "autoclass", "autofunction", "automodule", "rubric"}
ROLE = re.compile(r":[\w:+-]+:`(?:~|!)?([^`<]*?)(?:\s*<[^>]*>)?`")
LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`_+")
INLINE = re.compile(r"``(.+?)``")
EMPH = re.compile(r"\*\*?([^*\s][^*]*?)\*\*?")
REF = re.compile(r"`([^`]+)`_+")
UNDERLINE = re.compile(r"^\s*([=\-~^*#+\"'`.:_])\1{2,}\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _inline(text: str) -> str:
    text = LINK.sub(r"\1", ROLE.sub(r"\1", text))
    text = INLINE.sub(r"\1", text)
    text = REF.sub(r"\1", EMPH.sub(r"\1", text))
    return text.replace("\\", "").replace("|", "")


def _prose(par: str) -> bool:
    words = par.split()
    letters = sum(c.isalpha() or c.isspace() for c in par)
    return len(words) >= 4 and letters >= 0.8 * len(par) and not par.startswith((">>>", "...", "$ "))


def clean(rst: str) -> list[str]:
    """The prose paragraphs of one reStructuredText document, markup stripped, one paragraph per entry."""
    lines = rst.expandtabs(4).splitlines()
    out, par, skip_below = [], [], None
    prev_literal = False
    for line in lines:
        stripped = line.strip()
        if skip_below is not None:
            if not stripped or _indent(line) > skip_below:
                continue
            skip_below = None
        if not stripped:
            if par:
                text = _inline(" ".join(par))
                if _prose(text):
                    out.append(text)
                prev_literal = par[-1].endswith("::")
                par = []
            continue
        if prev_literal and _indent(line) > 0 and not par:
            skip_below = _indent(line) - 1       # the indented literal block after a paragraph ending in '::'
            prev_literal = False
            continue
        prev_literal = False
        if UNDERLINE.match(line) or stripped.startswith(("+--", "+==", "|")) or re.match(r"^=+(\s+=+)+$", stripped):
            continue
        m = re.match(r"^\.\.\s+([\w:+-]+)::(.*)$", stripped)
        if m or stripped.startswith(".. "):
            name = m.group(1) if m else ""
            if par:
                lines_done = " ".join(par)
                text = _inline(lines_done)
                if _prose(text):
                    out.append(text)
                par = []
            if not m or name in SKIP or name.startswith(("c:", "test")):
                skip_below = _indent(line)            # a comment, label, substitution or skipped directive
            continue
        if re.match(r"^:[\w-]+:", stripped) and not par:
            continue                                   # a directive option or field list item
        par.append(stripped[:-1] if stripped.endswith("::") and not stripped.endswith(" ::") else
                   stripped.removesuffix(" ::"))
        if stripped.endswith("::"):
            par[-1] += "::"
    if par:
        text = _inline(" ".join(par))
        if _prose(text):
            out.append(text)
    return [p.replace("::", ":") for p in out]


def build(sources: Path) -> tuple[int, int]:
    docs = []
    for path in sorted(sources.rglob("*.rst.txt")):
        rel = path.relative_to(sources).as_posix().removesuffix(".rst.txt")
        if not rel.startswith(SECTIONS):
            continue
        paragraphs = clean(path.read_text(encoding="utf-8"))
        if sum(len(p) for p in paragraphs) >= 500:
            docs.append({"source": rel, "text": "\n".join(paragraphs)})
    OUT.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for doc in docs:
            gz.write((json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))
    (OUT / "python-docs.jsonl.gz").write_bytes(raw.getvalue())
    licence = sources / "license.rst.txt"
    (OUT / "python-docs.LICENSE.txt").write_text(licence.read_text(encoding="utf-8"), encoding="utf-8")
    return len(docs), sum(len(d["text"].encode("utf-8")) for d in docs)


if __name__ == "__main__":
    n, size = build(Path(sys.argv[1]))
    print(f"{n} documents, {size / 1e6:.2f} MB of text")
