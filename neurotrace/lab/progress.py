"""Progress and cancellation for long experiments.

Torch loops run in worker threads that cannot be interrupted from outside, so every long loop calls
``reporter.step(...)`` between units of work: it reports progress and raises :class:`Cancelled` when
the caller asked to stop.
"""

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from neurotrace.lab.errors import Cancelled

ProgressFn = Callable[[float, float | None, str], None]


@dataclass
class Reporter:
    """Collects progress callbacks and a cancel flag; safe to share between threads."""

    on_progress: ProgressFn | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)

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


NULL_REPORTER = Reporter()


def stderr_progress(indent: str = "") -> ProgressFn:
    """A progress callback printing ``[done/total] message`` lines to stderr (CLI and demo)."""

    def show(done: float, total: float | None, message: str) -> None:
        frac = f"{done:.0f}/{total:.0f}" if total else f"{done:.0f}"
        print(f"{indent}[{frac}] {message}", file=sys.stderr, flush=True)

    return show
