"""Run directories: the unit of truth.

Every tool call writes one directory ``<runs>/<utc-stamp>-<tool>-<hash8>/`` holding
``request.json``, artifacts (``arrays/*.safetensors|.npy``, ``tables/*.csv|.jsonl``,
``figures/*.png``, ``*.json``, ``*.md``) and ``manifest.json``. The manifest is rewritten atomically
at start (status ``running``, with the owner: pid, host and process start time) and at the end
(``complete`` / ``failed`` / ``cancelled``), listing every artifact with its sha256. A ``running`` run
whose owner process is gone is marked ``interrupted`` when the store opens and whenever runs are
listed. Only regular, singly linked files inside the real run directory are served (no symlinks, no
hard links). Every write goes to a temp file and is renamed into place, so a crash
never leaves a half-written artifact that looks complete. Nothing is ever loaded with pickle. The
manifest's record types and the atomic writes live in :mod:`neurotrace.lab.runs.manifest`.
"""

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from neurotrace.lab.errors import Cancelled, DiskFull, InputError, NotFound
from neurotrace.lab.runs.htmlreport import render_report
from neurotrace.lab.runs.manifest import (
    ArtifactEntry,
    Manifest,
    RunOwner,
    atomic_write_bytes,
    atomic_write_text,
    is_disk_full,
    media_type,
    package_versions,
    remove_temps,
    shown,
    write_manifest,
)

log = logging.getLogger("neurotrace.lab")

RUN_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}(?:\d{6})?Z-[a-z_]+-[0-9a-f]{8}$")
URI_PREFIX = "neurotrace://runs"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    return obj


class Run:
    """An open run directory. Use through :meth:`RunStore.open_run` (a context manager)."""

    def __init__(self, store: "RunStore", run_id: str, tool: str, seed: int | None) -> None:
        self.store = store
        self.run_id = run_id
        self.dir = store.root / run_id
        self.manifest = Manifest(
            run_id=run_id, tool=tool, status="running", created=_now(), seed=seed,
            versions=package_versions(), owner=RunOwner.current(),
        )
        self._lock = threading.Lock()

    # -- artifacts ---------------------------------------------------------------------------
    def _record(self, rel: str, data: bytes) -> str:
        rel = rel.replace("\\", "/")
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise InputError("artifact", f"artifact path {rel!r} escapes the run directory")
        atomic_write_bytes(self.dir / rel, data)
        entry = ArtifactEntry(path=rel, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data),
                              media_type=media_type(rel))
        with self._lock:
            self.manifest.artifacts = [a for a in self.manifest.artifacts if a.path != rel] + [entry]
        return self.uri(rel)

    def record_file(self, rel: str) -> str:
        """List a file already written (atomically) inside the run directory, hashing it in chunks.

        For artifacts too large to hold in memory (e.g. memory-mapped state arrays)."""
        rel = rel.replace("\\", "/")
        path = self.dir / rel
        if rel.startswith("/") or ".." in Path(rel).parts or not path.is_file():
            raise InputError("artifact", f"no file {rel!r} inside the run directory")
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        entry = ArtifactEntry(path=rel, sha256=h.hexdigest(), bytes=path.stat().st_size, media_type=media_type(rel))
        with self._lock:
            self.manifest.artifacts = [a for a in self.manifest.artifacts if a.path != rel] + [entry]
        return self.uri(rel)

    def write_bytes(self, rel: str, data: bytes) -> str:
        return self._record(rel, data)

    def write_text(self, rel: str, text: str) -> str:
        return self._record(rel, text.encode("utf-8"))

    def write_json(self, rel: str, obj: Any) -> str:
        return self.write_text(rel, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")

    def write_jsonl(self, rel: str, rows: Iterable[Any]) -> str:
        return self.write_text(rel, "".join(json.dumps(_jsonable(r)) + "\n" for r in rows))

    def write_csv(self, rel: str, rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str] | None = None,
                  delimiter: str = ",") -> str:
        names = list(fieldnames) if fieldnames is not None else (list(rows[0].keys()) if rows else [])
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=names, delimiter=delimiter, lineterminator="\n",
                                extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
        return self.write_text(rel, buf.getvalue())

    def write_npy(self, rel: str, array: np.ndarray) -> str:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        return self._record(rel, buf.getvalue())

    def write_tensors(self, rel: str, tensors: Mapping[str, Any], metadata: dict[str, str] | None = None) -> str:
        from safetensors.torch import save

        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
        return self._record(rel, data)

    def write_figure(self, rel: str, fig: Any, dpi: int = 120) -> str:
        """Save a matplotlib figure as PNG and, beside it, as SVG (both listed); close it; the PNG's URI."""
        import matplotlib.pyplot as plt

        png, svg = io.BytesIO(), io.BytesIO()
        fig.savefig(png, format="png", dpi=dpi, bbox_inches="tight")
        with plt.rc_context({"svg.hashsalt": "neurotrace"}):   # same figure, same bytes (no random ids)
            fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
        plt.close(fig)
        self._record(str(Path(rel).with_suffix(".svg")).replace("\\", "/"), svg.getvalue())
        return self._record(rel, png.getvalue())

    def write_report(self) -> str:
        """Write ``report.html``: summary, request, figures inline, sortable tables, artifact links."""
        return self.write_text("report.html", render_report(self.dir, self.manifest.model_dump(mode="json")))

    # -- bookkeeping -------------------------------------------------------------------------
    def uri(self, rel: str) -> str:
        return f"{URI_PREFIX}/{self.run_id}/artifacts/{rel}"

    @property
    def manifest_uri(self) -> str:
        return f"{URI_PREFIX}/{self.run_id}/manifest"

    def add_model(self, model_id: str, fingerprint: str, source: dict[str, Any] | None = None) -> None:
        self.manifest.models[model_id] = fingerprint
        if source:
            self.manifest.model_sources[model_id] = source

    def add_input(self, run_id: str) -> None:
        if run_id not in self.manifest.inputs:
            self.manifest.inputs.append(run_id)

    def add_dictionary(self, ref: str, record: dict[str, Any]) -> None:
        """Note a dictionary (SAE/transcoder) the run used: its reference and its weights' sha256."""
        self.manifest.dictionaries[ref] = dict(record)

    def set_summary(self, text: str) -> None:
        self.manifest.summary = text

    def artifact_uris(self) -> list[str]:
        return [self.uri(a.path) for a in self.manifest.artifacts]

    def save_manifest(self) -> None:
        write_manifest(self.dir / "manifest.json", self.manifest)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RunStore:
    """Creates, lists and reads run directories under one root."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._counter = 0
        self._lock = threading.Lock()
        self._reserved = threading.local()
        self._progress_at: dict[str, float] = {}
        self._open: dict[str, Run] = {}   # runs this process has open (for end_open_runs)
        self._openers: dict[str, int] = {}  # run id -> the thread that opened it
        self.reap_stale()

    def new_id(self, tool: str, request_json: str = "") -> str:
        """A fresh run id for ``tool`` (see :meth:`reserved_id` to hand it to the next :meth:`open_run`)."""
        return self._new_id(tool, request_json)

    @contextmanager
    def reserved_id(self, run_id: str, keeps_result: bool = True) -> Iterator[None]:
        """In this thread, the next :meth:`open_run` uses ``run_id`` (a job can name its run at once); with
        ``keeps_result`` its manifest says the caller will :meth:`attach_result` once it closes."""
        self._reserved.run_id, self._reserved.keeps_result = run_id, keeps_result
        try:
            yield
        finally:
            self._reserved.run_id, self._reserved.keeps_result = None, False

    def _new_id(self, tool: str, request_json: str) -> str:
        with self._lock:
            self._counter += 1
            salt = f"{request_json}|{os.getpid()}|{self._counter}|{datetime.now(UTC).isoformat()}"
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        return f"{stamp}-{tool}-{hashlib.sha256(salt.encode()).hexdigest()[:8]}"

    @contextmanager
    def open_run(self, tool: str, request: Any, seed: int | None = None) -> Iterator[Run]:
        """Open a run: writes request.json and a ``running`` manifest; on exit marks the outcome.

        A :class:`Cancelled` exception (or Ctrl-C) marks the run ``cancelled``; any other exception ``failed``
        (with the message); a normal exit ``complete``. The exception is re-raised.
        """
        req = _jsonable(request)
        req_json = json.dumps(req, sort_keys=True, default=str)
        reserved, self._reserved.run_id = getattr(self._reserved, "run_id", None), None
        run = Run(self, reserved or self._new_id(tool, req_json), tool, seed)
        run.manifest.result_pending = bool(reserved and getattr(self._reserved, "keeps_result", False))
        try:
            run.dir.mkdir(parents=True, exist_ok=False)
            atomic_write_text(run.dir / "request.json", json.dumps(req, indent=2, default=str) + "\n")
            run.save_manifest()
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            shutil.rmtree(run.dir, ignore_errors=True)  # the run could not even open: nothing of it stays
            raise self.disk_full() from exc
        self._open[run.run_id] = run
        self._openers[run.run_id] = threading.get_ident()
        try:
            yield run
        except (Cancelled, KeyboardInterrupt) as exc:
            run.manifest.status, run.manifest.error = "cancelled", str(exc) or "interrupted"
            raise
        except BaseException as exc:
            if is_disk_full(exc):
                raise self._failed_full(run) from exc
            run.manifest.status, run.manifest.error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        else:
            run.manifest.status = "complete"
            try:
                run.write_report()
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                raise self._failed_full(run) from exc
        finally:
            run.manifest.finished = _now()
            try:
                run.save_manifest()
            finally:
                self._open.pop(run.run_id, None)
                self._openers.pop(run.run_id, None)

    def disk_full(self) -> DiskFull:
        """The error of a run that found no room for its files (names the runs directory, never the home)."""
        return DiskFull("runs_dir", f"disk full: no room left for the run's files in the runs directory "
                        f"{shown(self.root)}", fix="free space on that disk (e.g. delete old runs there) or point "
                        "NEUROTRACE_RUNS_DIR (--runs-dir) at a disk with room, then run the call again")

    def _failed_full(self, run: Run) -> DiskFull:
        """Mark ``run`` failed for a full disk and delete its half-written temp files."""
        error = self.disk_full()
        run.manifest.status, run.manifest.error = "failed", str(error)
        removed = remove_temps(run.dir)
        log.warning("run %s: disk full in %s (%d temp file(s) removed)", run.run_id, self.root, removed)
        return error

    def opener(self, run_id: str) -> int | None:
        """The thread that has ``run_id`` open in this process (None: not open here)."""
        return self._openers.get(run_id)

    def open_count(self) -> int:
        return len(self._open)

    def end_open_runs(self, status: str, error: str) -> int:
        """Mark every run this process still has open ``status`` (a server stopping by signal: its workers
        did not reach their next step in time); how many. Best effort: the process is about to exit."""
        ended = 0
        for run in list(self._open.values()):
            if run.manifest.status == "running":
                run.manifest.status, run.manifest.error, run.manifest.finished = status, error, _now()
                run.manifest.progress = None
                try:
                    run.save_manifest()
                    ended += 1
                except OSError:
                    pass
        return ended

    # -- reading -------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        if not RUN_ID_RE.match(run_id or ""):
            raise NotFound("run_id", f"no run {run_id!r}", fix="list runs with the runs resource or `neurotrace runs`")
        path = self.root / run_id
        if path.is_symlink() or not (path / "manifest.json").is_file() or path.resolve().parent != self.root \
                or _hard_linked(path / "manifest.json"):
            raise NotFound("run_id", f"no run {run_id!r} in the runs directory",
                           fix="list runs with the runs resource or `neurotrace runs`")
        return path

    def manifest(self, run_id: str) -> Manifest:
        path = self.run_dir(run_id) / "manifest.json"
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))

    def list_runs(self, tool: str | None = None) -> list[Manifest]:
        """Every run, newest first; a ``running`` run whose owner is gone is marked ``interrupted`` first."""
        out = []
        for child in sorted(self.root.iterdir(), reverse=True):
            if RUN_ID_RE.match(child.name) and not child.is_symlink() and (child / "manifest.json").is_file():
                try:
                    m = Manifest.model_validate_json((child / "manifest.json").read_text(encoding="utf-8"))
                except ValueError:
                    continue
                m = self._reap(child, m)
                if tool is None or m.tool == tool:
                    out.append(m)
        return out

    def reap_stale(self) -> int:
        """Mark every ``running`` run whose owner process is gone ``interrupted``; how many were."""
        before = {m.run_id for m in self.list_runs() if m.status == "interrupted"}
        return sum(1 for m in self.list_runs() if m.status == "interrupted" and m.run_id not in before)

    def _reap(self, path: Path, m: Manifest) -> Manifest:
        if m.status != "running" or m.owner is None or not m.owner.gone():
            return m
        m = m.model_copy(update={"status": "interrupted", "finished": _now(), "progress": None,
                                 "error": f"the server process that ran it (pid {m.owner.pid}) ended before it "
                                          "finished"})
        try:
            write_manifest(path / "manifest.json", m)
            remove_temps(path)
        except OSError:  # a full or read-only disk: it reads as interrupted all the same; the store still opens
            log.warning("could not mark run %s interrupted on disk", m.run_id, exc_info=True)
        return m

    def note_progress(self, run_id: str, done: float, total: float | None, message: str,
                      every_s: float = 1.0) -> None:
        """Record a running run's progress in its manifest (at most once per ``every_s``; best effort)."""
        now = time.monotonic()
        if now - self._progress_at.get(run_id, 0.0) < every_s:
            return
        self._progress_at[run_id] = now
        try:
            path = self.run_dir(run_id) / "manifest.json"
            m = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        except (NotFound, OSError, ValueError):
            return
        if m.status == "running":
            m.progress = {"done": done, "total": total, "message": message, "updated": _now()}
            try:
                atomic_write_text(path, m.model_dump_json(indent=2) + "\n")
            except OSError:  # progress is best effort (a full disk fails the run at its next real write)
                log.debug("progress of %s not recorded", run_id, exc_info=True)

    def attach_result(self, run_id: str, data: Any) -> str:
        """Keep a finished run's tool result as ``tool_result.json`` (listed), so it can be fetched again."""
        path = self.run_dir(run_id)
        blob = (json.dumps(_jsonable(data), indent=2) + "\n").encode("utf-8")
        atomic_write_bytes(path / "tool_result.json", blob)
        with self._lock:
            m = Manifest.model_validate_json((path / "manifest.json").read_text(encoding="utf-8"))
            entry = ArtifactEntry(path="tool_result.json", sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob),
                                  media_type="application/json")
            m.artifacts = [a for a in m.artifacts if a.path != entry.path] + [entry]
            m.result_pending = False
            write_manifest(path / "manifest.json", m)
        return f"{URI_PREFIX}/{run_id}/artifacts/tool_result.json"

    def settle_result(self, run_id: str) -> None:
        """The caller that was to keep ``run_id``'s result will not (packaging failed): stop saying it is on
        its way (best effort; nothing to do when it was kept or the run never opened)."""
        try:
            path = self.run_dir(run_id) / "manifest.json"
            with self._lock:
                m = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
                if m.result_pending:
                    m.result_pending = False
                    write_manifest(path, m)
        except (NotFound, OSError, ValueError):
            return

    def artifact_path(self, run_id: str, rel: str) -> Path:
        """Path of an artifact the manifest lists; anything else (traversal included) is NotFound."""
        manifest = self.manifest(run_id)
        listed = {a.path for a in manifest.artifacts} | {"request.json"}
        if rel not in listed:
            raise NotFound("uri", f"run {run_id} has no artifact {rel!r}",
                           fix=f"read {URI_PREFIX}/{run_id}/manifest for the artifact list")
        base = self.run_dir(run_id).resolve()
        path = base / rel
        if base not in path.resolve().parents or _linked(base, rel):
            raise NotFound("uri", f"run {run_id} has no servable artifact {rel!r} (links are not served)",
                           fix=f"read {URI_PREFIX}/{run_id}/manifest for the artifact list")
        return path

    def read_json(self, run_id: str, rel: str) -> Any:
        """The parsed JSON artifact ``rel`` of a run."""
        return json.loads(self.artifact_path(run_id, rel).read_text(encoding="utf-8"))

    def read_tensors(self, run_id: str, rel: str) -> dict[str, Any]:
        from safetensors.torch import load_file

        return load_file(str(self.artifact_path(run_id, rel)))

    def read_npy(self, run_id: str, rel: str) -> np.ndarray:
        return np.load(self.artifact_path(run_id, rel), allow_pickle=False)


def _linked(base: Path, rel: str) -> bool:
    """True when ``rel`` under ``base`` passes through a symlink or is not a singly linked regular file."""
    path = base
    for part in Path(rel).parts:
        path = path / part
        try:
            info = os.lstat(path)
        except OSError:
            return True
        if stat.S_ISLNK(info.st_mode):
            return True
    return not stat.S_ISREG(info.st_mode) or info.st_nlink != 1


def _hard_linked(path: Path) -> bool:
    """A regular file with more than one link (it may be a file from outside the runs directory): not served."""
    try:
        return path.lstat().st_nlink > 1
    except OSError:
        return False
