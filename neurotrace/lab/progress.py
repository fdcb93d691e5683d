"""Progress and cancellation for long experiments.

Torch loops run in worker threads that cannot be interrupted from outside, so every long loop calls
``reporter.step(...)`` between units of work: it reports progress and raises :class:`Cancelled` when
the caller asked to stop.
"""

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
