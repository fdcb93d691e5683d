"""How many jobs run at once, server-wide: the rest wait in line.

One :class:`Admission` per lab (so per server, shared by every connection): at most ``max_jobs`` jobs
run together (``NEUROTRACE_MAX_JOBS``, ``--max-jobs``; default the number of cores this process may
use), and the memory estimates of the running jobs together stay within the memory budget (a job that
alone is over it was refused before it got here, by :func:`~neurotrace.lab.jobs.budget.check_request`).
Jobs start in the order they arrived: the first in line starts as soon as a slot and its memory are
free, and a later one never overtakes it. Thread-safe; the caller polls :meth:`try_start` (the MCP
runner from its event loop, so a waiting job holds no worker thread) and reads :meth:`place` to tell
the client where it stands.
"""

import itertools
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Ticket:
    """One job's place in the line: its number and its memory estimate in bytes."""

    number: int
    need: int
    tool: str = ""


class Admission:
    """The server-wide bound on running jobs (count and summed memory estimates), first come first served."""

    def __init__(self, max_jobs: int, budget: int) -> None:
        self.max_jobs = max(1, int(max_jobs))
        self.budget = int(budget)
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._waiting: list[Ticket] = []
        self._running: dict[int, Ticket] = {}

    def enter(self, need: int, tool: str = "") -> Ticket:
        """Join the line with a job whose memory estimate is ``need`` bytes."""
        ticket = Ticket(number=next(self._numbers), need=max(0, int(need)), tool=tool)
        with self._lock:
            self._waiting.append(ticket)
        return ticket

    def try_start(self, ticket: Ticket) -> bool:
        """Start ``ticket`` if it is first in line and a slot and its memory are free (True once started)."""
        with self._lock:
            if ticket.number in self._running:
                return True
            if not self._waiting or self._waiting[0] is not ticket or not self._fits(ticket):
                return False
            self._waiting.pop(0)
            self._running[ticket.number] = ticket
            return True

    def _fits(self, ticket: Ticket) -> bool:
        if len(self._running) >= self.max_jobs:
            return False
        held = sum(t.need for t in self._running.values())
        return not self._running or held + ticket.need <= self.budget

    def leave(self, ticket: Ticket) -> None:
        """The job ended (or gave up waiting): free its slot or its place in line."""
        with self._lock:
            self._running.pop(ticket.number, None)
            self._waiting = [t for t in self._waiting if t is not ticket]

    def place(self, ticket: Ticket) -> int | None:
        """``ticket``'s place in line (1: next to start), or None once it runs (or left)."""
        with self._lock:
            for i, t in enumerate(self._waiting):
                if t is ticket:
                    return i + 1
        return None

    def why(self, ticket: Ticket) -> str:
        """Why ``ticket`` waits, for the client: its place and which limit holds it."""
        with self._lock:
            waiting = len(self._waiting)
            place = next((i + 1 for i, t in enumerate(self._waiting) if t is ticket), None)
            running, held = len(self._running), sum(t.need for t in self._running.values())
        if place is None:
            return "started"
        if place > 1:
            reason = f"{place - 1} job(s) ahead of it"
        elif running >= self.max_jobs:
            reason = f"{running} job(s) running, the limit of NEUROTRACE_MAX_JOBS={self.max_jobs}"
        else:
            reason = (f"the running jobs' memory estimates ({_size(held)}) plus its own ({_size(ticket.need)}) "
                      f"are over the memory budget of {_size(self.budget)} (NEUROTRACE_MEMORY_BUDGET)")
        return f"queued: place {place} of {waiting} ({reason}); it starts when one finishes"

    def counts(self) -> tuple[int, int]:
        """(running, waiting)."""
        with self._lock:
            return len(self._running), len(self._waiting)


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"
