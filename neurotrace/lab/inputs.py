"""File inputs a request may name (clamp_sweep ``prompt_file``, generate_facts spec/records paths).

A request comes from a client the server does not trust with its file system, so a named file is read
only when all of these hold:

* it lies under one of the allowed directories of the server configuration (default: the runs
  directory and an ``inputs/`` directory beside it), checked on the *resolved* path, so a symlink or
  ``..`` cannot lead out;
* it is a regular file (no devices, FIFOs, ``/proc`` files or directories);
* it is at most ``max_bytes`` long (checked before reading, and the read itself stops one byte past).

A relative path is looked up in each allowed directory in turn. Errors name the field and show paths
relative to the runs directory; they never quote the file's content.
"""

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from neurotrace.lab.errors import InputError, NotFound

DEFAULT_MAX_INPUT_BYTES = 16 * 1024 * 1024


def shown_path(path: Path | str, runs_root: Path) -> str:
    """``path`` as an error message may show it: relative to the runs root (never the home directory)."""
    path = Path(path)
    try:
        return os.path.relpath(path, runs_root) if path.is_absolute() else str(path)
    except ValueError:  # another drive (Windows)
        return path.name


@dataclass(frozen=True)
class InputPolicy:
    """Which files a request may read: directories, size cap, and the root paths are shown against."""

    roots: tuple[Path, ...]
    runs_root: Path
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES

    def _where(self) -> str:
        shown = ["the runs directory" if r == self.runs_root else shown_path(r, self.runs_root) for r in self.roots]
        return ", ".join(shown) or "(none)"

    def resolve(self, value: str, field: str) -> Path:
        """The allowed regular file ``value`` names, or an :class:`InputError` / :class:`NotFound`."""
        fix = (f"put the file under one of the allowed input directories ({self._where()}; paths relative to "
               "the runs directory) and pass its path, or pass the content inline")
        if not value or "\x00" in value or len(value) > 4096:
            raise InputError(field, "not a usable file path (empty, too long or containing NUL)", fix=fix)
        given = Path(value)
        if given.is_absolute() or value.startswith("~"):
            candidates = [Path(value).expanduser()]
        else:
            candidates = [root / given for root in self.roots]
        for candidate in candidates:
            if not self._inside(Path(os.path.normpath(os.path.abspath(candidate)))):
                raise InputError(field, "the path is outside the allowed input directories", fix=fix)
            try:
                real = candidate.resolve(strict=True)
            except (OSError, RuntimeError):
                continue
            if not self._inside(real):
                raise InputError(field, f"{shown_path(candidate, self.runs_root)} is outside the allowed input "
                                 "directories (symlinks are followed before this check)", fix=fix)
            return self._regular(real, field, fix)
        raise NotFound(field, f"no file {shown_path(candidates[0], self.runs_root) if candidates else value!r} "
                       "in the allowed input directories", fix=fix)

    def _inside(self, path: Path) -> bool:
        return any(path == root or root in path.parents for root in (r.resolve() for r in self.roots))

    def _regular(self, real: Path, field: str, fix: str) -> Path:
        info = real.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InputError(field, f"{shown_path(real, self.runs_root)} is not a regular file", fix=fix)
        if info.st_nlink > 1:  # a hard link can name a file outside the input directories
            raise InputError(field, f"{shown_path(real, self.runs_root)} has {info.st_nlink} hard links; hard-linked "
                             "files are not read", fix="copy the file into the input directory instead of linking it")
        if info.st_size > self.max_bytes:
            raise InputError(field, f"file is {info.st_size} bytes, over the input limit of {self.max_bytes}",
                             fix="split the file, or raise NEUROTRACE_MAX_INPUT_BYTES in the server configuration")
        return real

    def read_text(self, value: str, field: str) -> tuple[str, str]:
        """(text, name to show) of the allowed UTF-8 file ``value`` names."""
        real = self.resolve(value, field)
        with open(real, "rb") as fh:
            data = fh.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise InputError(field, f"file is over the input limit of {self.max_bytes} bytes",
                             fix="split the file, or raise NEUROTRACE_MAX_INPUT_BYTES in the server configuration")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(field, f"{real.name} is not UTF-8 text (bad byte at offset {exc.start})",
                             fix="give a UTF-8 text file") from exc
        return text, real.name


def default_input_roots(runs_dir: Path) -> tuple[Path, ...]:
    """The runs directory and ``inputs/`` beside it."""
    runs = Path(runs_dir).expanduser().resolve()
    return runs, runs.parent / "inputs"
