"""Captured states on disk: a chunked writer and the :class:`TraceDataset` reader.

A capture run holds

* ``trace.jsonl`` — one line per step: ``step``, ``prompt`` (the text added at this step), ``output``
  (generated text), ``metadata`` (the caller's), ``token_ids``/``tokens`` of the recorded forward,
  ``positions`` (which of those tokens have a row) and ``rows`` = ``[start, end)``, the rows of every
  state array that belong to the step;
* ``arrays/states/<site>.npy`` — the stacked states ``[N, D]`` of one site (row ``i`` of every site is
  the same token), and ``capture.json`` (:class:`~neurotrace.lab.capture.schema.CaptureRecord`) listing the
  sites, widths and row count.

The writer keeps at most ``chunk_rows`` rows per site in memory: full chunks go to part files and
:meth:`StateWriter.finish` concatenates them into one ``.npy`` through ``np.lib.format.open_memmap``, so
a large capture never holds every state in RAM. The reader memory-maps the arrays.
"""

import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurotrace.lab.capture.schema import CaptureRecord
from neurotrace.lab.errors import InputError
from neurotrace.lab.runs import Run, RunStore

STORE_DTYPES = {"float32": np.float32, "float16": np.float16}
CAPTURE_FILE = "capture.json"


def states_path(site: str) -> str:
    return f"arrays/states/{site}.npy"


def reserve(path: Path) -> None:
    """Allocate every block of ``path`` now (a sparse file memory-mapped on a full disk would kill the
    process with SIGBUS at the first page it cannot back; this raises ENOSPC instead)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


@dataclass
class _SiteBuffer:
    width: int
    chunks: list[np.ndarray] = field(default_factory=list)
    buffered: int = 0
    parts: list[Path] = field(default_factory=list)
    rows: int = 0


class StateWriter:
    """Append ``[n, D]`` blocks per site; flush to part files every ``chunk_rows`` rows."""

    def __init__(self, run: Run, widths: dict[str, int], dtype: str = "float32", chunk_rows: int = 4096) -> None:
        self.run = run
        self.dtype = STORE_DTYPES[dtype]
        self.chunk_rows = chunk_rows
        self.parts_dir = run.dir / ".parts"
        self.sites = {site: _SiteBuffer(width) for site, width in widths.items()}

    def append(self, site: str, block: np.ndarray) -> None:
        buf = self.sites[site]
        buf.chunks.append(np.asarray(block, dtype=self.dtype))
        buf.buffered += block.shape[0]
        buf.rows += block.shape[0]
        if buf.buffered >= self.chunk_rows:
            self._flush(site, buf)

    def _flush(self, site: str, buf: _SiteBuffer) -> None:
        if not buf.chunks:
            return
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        part = self.parts_dir / f"{site}.{len(buf.parts):06d}.npy"
        np.save(part, np.concatenate(buf.chunks), allow_pickle=False)
        buf.parts.append(part)
        buf.chunks, buf.buffered = [], 0

    def finish(self) -> dict[str, str]:
        """Concatenate every site's parts into ``arrays/states/<site>.npy``; returns {site: uri}."""
        uris = {}
        for site, buf in self.sites.items():
            rel = states_path(site)
            final = self.run.dir / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f".{final.name}.tmp")
            try:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=(buf.rows, buf.width))
                reserve(tmp)  # a full disk is an OSError here, not a SIGBUS while writing the map
                row = 0
                for block in [*(np.load(p, mmap_mode="r") for p in buf.parts), *buf.chunks]:
                    out[row:row + block.shape[0]] = block
                    row += block.shape[0]
                out.flush()
                del out
                os.replace(tmp, final)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            uris[site] = self.run.record_file(rel)
            buf.chunks = []
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        return uris


@dataclass
class TraceDataset:
    """The states one capture run recorded at one site, with per-row metadata.

    ``states`` is ``[N, D]`` (memory-mapped, read-only); ``meta`` holds per-row int arrays ``step``,
    ``pos`` (token position in the step's recorded forward) and ``token_id``; ``steps`` are the
    ``trace.jsonl`` lines.
    """

    run_id: str
    site: str
    states: np.ndarray
    meta: dict[str, np.ndarray]
    steps: list[dict[str, Any]]
    info: CaptureRecord

    def __len__(self) -> int:
        return int(self.states.shape[0])

    def token(self, row: int) -> str:
        step = self.steps[int(self.meta["step_index"][row])]
        return step["tokens"][int(self.meta["pos"][row])]

    def context(self, row: int, width: int = 8) -> str:
        """The ``width`` tokens before row ``row``'s token and the token itself in ``[[ ]]``."""
        step = self.steps[int(self.meta["step_index"][row])]
        pos = int(self.meta["pos"][row])
        tokens = step["tokens"]
        sep = "" if any(t[:1].isspace() for t in tokens) else " "    # BPE pieces carry their own spaces
        return sep.join([*tokens[max(0, pos - width):pos], "[[" + tokens[pos] + "]]"])


def read_steps(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    text = store.artifact_path(run_id, "trace.jsonl").read_text(encoding="utf-8")
    import json

    return [json.loads(line) for line in text.splitlines() if line.strip()]


def capture_info(store: RunStore, run_id: str, field: str = "capture_run_id") -> CaptureRecord:
    """The record of a capture run's ``capture.json``; InputError(field) if the run is not a capture."""
    manifest = store.manifest(run_id)
    if manifest.tool != "capture" or manifest.status != "complete":
        raise InputError(field, f"run {run_id} is a {manifest.status} {manifest.tool} run, not a complete capture",
                         fix="pass the run_id a capture call returned")
    return CaptureRecord.model_validate(store.read_json(run_id, CAPTURE_FILE))


def load_trace_dataset(lab_or_store: Any, run_id: str, site: str | None = None,
                       field: str = "capture_run_id") -> TraceDataset:
    """Load one site of a capture run (``site`` may be omitted when the run captured one site)."""
    store: RunStore = getattr(lab_or_store, "store", lab_or_store)
    info = capture_info(store, run_id, field)
    sites = list(info.sites)
    if site is None:
        if len(sites) != 1:
            raise InputError("site", f"run {run_id} captured {len(sites)} sites", fix=f"choose one of {sites}")
        site = sites[0]
    if site not in info.sites:
        raise InputError("site", f"run {run_id} did not capture {site!r}", fix=f"choose one of {sites}")
    states = np.load(store.artifact_path(run_id, info.sites[site].path), mmap_mode="r", allow_pickle=False)
    steps = read_steps(store, run_id)
    n = states.shape[0]
    meta = {k: np.zeros(n, dtype=np.int64) for k in ("step", "step_index", "pos", "token_id")}
    for i, entry in enumerate(steps):
        start, end = entry["rows"]
        pos = np.asarray(entry["positions"], dtype=np.int64)
        meta["step"][start:end] = entry["step"]
        meta["step_index"][start:end] = i
        meta["pos"][start:end] = pos
        meta["token_id"][start:end] = np.asarray(entry["token_ids"], dtype=np.int64)[pos]
    return TraceDataset(run_id=run_id, site=site, states=states, meta=meta, steps=steps, info=info)
