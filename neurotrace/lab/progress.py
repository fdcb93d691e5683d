"""Progress and cancellation for long experiments.

Torch loops run in worker threads that cannot be interrupted from outside, so every long loop calls
``reporter.step(...)`` between units of work: it reports progress and raises :class:`Cancelled` when
the caller asked to stop. Work with distinct stages (model load -> facts -> grid) may wrap them in
``with reporter.stage("grid"):``; a printer that knows stages nests the steps under them, the others
ignore it.

:func:`stderr_progress` is the printer of the CLI and the demo: one tqdm bar per unit of work (a run of
steps with one ``total``) with rate and ETA on a terminal, and on anything else (CI logs, pipes) plain
lines, at most one per 10% of each unit.
"""

import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from tqdm import tqdm

from neurotrace.lab.errors import Cancelled

ProgressFn = Callable[[float, float | None, str], None]
#: a stage begins (its name) or the current one ends (None)
StageFn = Callable[[str | None], None]


@dataclass
class Reporter:
    """Collects progress callbacks and a cancel flag; safe to share between threads."""

    on_progress: ProgressFn | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    on_stage: StageFn | None = None

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self.cancel_event.is_set():
            raise Cancelled("run cancelled by the caller")

    def step(self, done: float, total: float | None = None, message: str = "") -> None:
        """Report that ``done`` of ``total`` units are finished, then honour cancellation."""
        if self.on_progress is not None:
            self.on_progress(float(done), None if total is None else float(total), message)
        self.check()

    @contextmanager
    def stage(self, name: str) -> Iterator["Reporter"]:
        """Steps inside the block belong to stage ``name`` (e.g. ``"model load"``, ``"grid"``)."""
        if self.on_stage is not None:
            self.on_stage(name)
        try:
            yield self
        finally:
            if self.on_stage is not None:
                self.on_stage(None)

    def stage_callback(self, prefix: str) -> Callable[[str], None]:
        """A ``progress(stage)`` callback (as the GGUF converter takes) reporting each sub-stage by name."""
        return lambda stage: self.step(0, None, f"{prefix}: {stage}")


NULL_REPORTER = Reporter()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _whole(x: float) -> float:
    return int(x) if float(x).is_integer() else x


class StderrProgress:
    """The CLI's progress printer: tqdm bars on a terminal, sparse plain lines elsewhere, or nothing.

    A *unit of work* is a run of steps with the same ``total`` whose ``done`` never goes back; a new
    total (or ``done`` going back) starts a new bar. Inside a stage the bar is nested under a stage line.
    """

    def __init__(self, indent: str = "", *, quiet: bool = False, stream: TextIO | None = None,
                 tty: bool | None = None) -> None:
        self.indent = indent
        self.quiet = quiet
        self.stream = stream
        self.tty = tty
        self._lock = threading.Lock()
        self._stage: str | None = None
        self._stage_bar: Any = None
        self._bar: Any = None
        self._unit: tuple[float | None, float, float, int] | None = None   # total, last done, start, decile
        self._last_message: str | None = None

    @property
    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def _is_tty(self) -> bool:
        if self.tty is not None:
            return self.tty
        isatty = getattr(self._out, "isatty", None)
        return bool(isatty and isatty())

    def __call__(self, done: float, total: float | None, message: str) -> None:
        if self.quiet:
            return
        done, total = _whole(done), None if total is None else _whole(total)
        with self._lock:
            if self._is_tty():
                self._bar_step(done, total, message)
            else:
                self._line_step(done, total, message)

    def stage(self, name: str | None) -> None:
        if self.quiet:
            return
        with self._lock:
            self._close_bar()
            if self._stage_bar is not None:
                self._stage_bar.close()
                self._stage_bar = None
            self._stage = name
            if name is None:
                return
            if self._is_tty():
                self._stage_bar = tqdm(total=None, desc=f"{self.indent}{name}", file=self._out, position=0,
                                       bar_format="{desc} [{elapsed}]", leave=True, dynamic_ncols=True)
            else:
                print(f"{self.indent}{name} ...", file=self._out, flush=True)

    def close(self) -> None:
        with self._lock:
            self._close_bar()
            if self._stage_bar is not None:
                self._stage_bar.close()
                self._stage_bar = None

    # -- terminal ------------------------------------------------------------------------------
    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._unit = None, None

    def _bar_step(self, done: float, total: float | None, message: str) -> None:
        unit = self._unit
        if unit is None or unit[0] != total or done < unit[1]:
            self._close_bar()
            nested = self._stage_bar is not None
            self._bar = tqdm(total=total, desc=f"{self.indent}{'  ' if nested else ''}{self._stage or ''}".rstrip()
                             or None, file=self._out, position=1 if nested else 0, leave=not nested,
                             dynamic_ncols=True, unit="step", smoothing=0.1)
            self._unit = (total, 0.0, time.monotonic(), -1)
        bar = self._bar
        bar.set_postfix_str(message[:60], refresh=False)
        bar.update(done - bar.n)
        self._unit = (total, done, self._unit[2], -1)
        if total is not None and done >= total:
            self._close_bar()

    # -- plain lines ----------------------------------------------------------------------------
    def _line_step(self, done: float, total: float | None, message: str) -> None:
        unit = self._unit
        now = time.monotonic()
        if unit is None or unit[0] != total or done < unit[1]:
            unit = (total, done, now, -1)
        total_, _, start, printed = unit
        if total_ is None or total_ <= 0:
            if unit is not self._unit or message != self._last_message:
                print(f"{self.indent}{self._prefix()}{message}", file=self._out, flush=True)
            self._last_message = message
            self._unit = (total_, done, start, printed)
            return
        decile = min(10, math.floor(10 * done / total_))
        if decile > printed:
            elapsed = now - start
            eta = f", ETA {_clock(elapsed * (total_ - done) / done)}" if 0 < done < total_ else ""
            rate = f", {done / elapsed:.2f} steps/s" if done > 0 and elapsed > 0 else ""
            print(f"{self.indent}{self._prefix()}{100 * done / total_:3.0f}% [{done:g}/{total_:g}] {message}"
                  f" ({_clock(elapsed)}{rate}{eta})", file=self._out, flush=True)
            printed = decile
        self._unit = (total_, done, start, printed)

    def _prefix(self) -> str:
        return f"{self._stage}: " if self._stage else ""


def stderr_progress(indent: str = "", *, quiet: bool = False, stream: TextIO | None = None) -> StderrProgress:
    """The CLI's and the demo's progress callback (see :class:`StderrProgress`); also has ``.stage``."""
    return StderrProgress(indent, quiet=quiet, stream=stream)


def stderr_reporter(indent: str = "", *, quiet: bool = False, stream: TextIO | None = None) -> Reporter:
    """A :class:`Reporter` printing to stderr with stages nested (``quiet`` prints nothing)."""
    printer = stderr_progress(indent, quiet=quiet, stream=stream)
    return Reporter(on_progress=printer, on_stage=printer.stage)
