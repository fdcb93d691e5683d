"""A run's manifest and the atomic writes under it.

``manifest.json`` is a run's commit marker: :class:`Manifest` lists the status, the owner process
(:class:`RunOwner`, so a ``running`` run whose process is gone reads as interrupted), the models and
their sources, the inputs and every artifact with its sha256. :func:`atomic_write_bytes` writes through
a temp file in the same directory and ``os.replace``, so no reader ever sees half a file.
"""

import errno
import os
import platform
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatus = Literal["running", "complete", "failed", "cancelled", "interrupted"]


class ArtifactEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="Path relative to the run directory, '/'-separated.")
    sha256: str
    bytes: int
    media_type: str


def _process_start() -> str:
    """This process's start time as the kernel reports it (guards against pid reuse); else import time."""
    try:
        with open(f"/proc/{os.getpid()}/stat", encoding="utf-8") as fh:
            return "clk:" + fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return f"t:{time.time():.3f}"


def _start_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return "clk:" + fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


PROCESS_START = _process_start()


class RunOwner(BaseModel):
    """The process that runs (or ran) a run: a ``running`` run whose owner is gone was interrupted."""

    model_config = ConfigDict(extra="forbid")
    pid: int
    host: str
    started: str = Field(description="The owner process's start time (kernel clock ticks or epoch seconds).")

    @classmethod
    def current(cls) -> "RunOwner":
        return cls(pid=os.getpid(), host=socket.gethostname(), started=PROCESS_START)

    def gone(self) -> bool:
        """True when this host can tell the owner process no longer exists (other hosts: never)."""
        if self.host != socket.gethostname():
            return False
        if self.pid == os.getpid():
            return self.started != PROCESS_START
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        start = _start_of(self.pid)
        return start is not None and self.started.startswith("clk:") and start != self.started


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str
    tool: str
    status: RunStatus
    created: str
    finished: str | None = None
    seed: int | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    models: dict[str, str] = Field(default_factory=dict, description="model id -> fingerprint")
    model_sources: dict[str, dict[str, Any]] = Field(default_factory=dict, description="model id -> where its "
                                                     "weights came from (e.g. the GGUF file's sha256 and tensor types)")
    inputs: list[str] = Field(default_factory=list, description="run ids this run read from")
    dictionaries: dict[str, dict[str, Any]] = Field(default_factory=dict, description="dictionary reference "
                                                    "(run id, folder, release/id) -> its weights' sha256, kind, "
                                                    "architecture and sites")
    artifacts: list[ArtifactEntry] = Field(default_factory=list)
    error: str | None = None
    summary: str | None = None
    owner: RunOwner | None = None
    progress: dict[str, Any] | None = Field(None, description="Last progress of a running run: done, total, "
                                            "message, updated.")
    result_pending: bool = Field(False, description="A server keeps this run's tool result (tool_result.json) "
                                 "just after the run closes; until then a complete run's result is on its way.")


MEDIA_TYPES = {
    ".json": "application/json", ".jsonl": "application/x-ndjson", ".csv": "text/csv",
    ".tsv": "text/tab-separated-values", ".md": "text/markdown", ".txt": "text/plain",
    ".png": "image/png", ".svg": "image/svg+xml", ".html": "text/html", ".npy": "application/octet-stream",
    ".safetensors": "application/octet-stream",
}


def media_type(path: str) -> str:
    return MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


# errors that mean "no room for this file": the disk is full, the quota is spent, or the file-size limit
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
TEMP_SUFFIX = ".tmp"


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError that says there is no room left (see :data:`NO_ROOM`), or one caused by it."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in NO_ROOM:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1  # type: ignore[assignment]
    return False


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory and ``os.replace``; the temp
    file is removed when the write fails (a full disk included), so nothing half-written is left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrite an existing small file in place (the blocks it frees are the ones it reuses): the last
    resort for a run's final manifest when the disk is too full for a temp file beside it."""
    with open(path, "r+b") as fh:
        fh.truncate(0)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("neurotrace", "torch", "transformers", "transformer-lens", "mcp", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_manifest(path: Path, manifest: Manifest) -> None:
    """Write a run's manifest atomically; on a disk too full for the temp file, overwrite the existing one
    in place (it frees what it reuses), so a run can still end ``failed`` on a full disk."""
    data = (manifest.model_dump_json(indent=2) + "\n").encode("utf-8")
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        if not is_disk_full(exc) or not path.is_file():
            raise
        rewrite_in_place(path, data)


def remove_temps(root: Path) -> int:
    """Delete the temp files of unfinished atomic writes under ``root`` (``.name....tmp``) and its hidden
    scratch folders; how many."""
    removed = 0
    for scratch in root.glob(".*"):  # a job's hidden scratch folders (e.g. capture's .parts)
        if scratch.is_dir() and not scratch.is_symlink():
            shutil.rmtree(scratch, ignore_errors=True)
            removed += 1
    for path in root.rglob(f".*{TEMP_SUFFIX}"):
        try:
            if path.is_file() and not path.is_symlink():
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def shown(path: Path) -> str:
    """A path for a message: the home directory as ``~``."""
    home = os.path.expanduser("~")
    text = str(path)
    return "~" + text[len(home):] if home not in ("", "/") and (text == home or text.startswith(home + "/")) else text

