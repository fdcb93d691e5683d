"""Waiting in line for a job slot (:class:`~neurotrace.lab.jobs.admission.Admission`), in the event loop.

A call whose job cannot start yet (``NEUROTRACE_MAX_JOBS`` jobs already run, or their memory estimates
plus its own are over the budget) waits here without holding a worker thread. Its place is told to the
client whenever it changes: a detached job's ``run_status`` (status ``queued``, ``place``) and task
status message, a waited call's progress notifications. A cancel while queued (``run_status`` with
``cancel``, ``tasks/cancel``, SIGTERM, the client's own cancel) ends it at once, before any work.
"""

from collections.abc import Awaitable, Callable

import anyio

from neurotrace.lab.errors import Cancelled
from neurotrace.lab.jobs import Admission, Ticket
from neurotrace.lab.progress import Reporter
from neurotrace.tools._jobs import Job

POLL_S = 0.05


async def wait_turn(admission: Admission, ticket: Ticket, reporter: Reporter, job: Job | None,
                    tell: Callable[[str], Awaitable[None]]) -> None:
    """Return once ``ticket`` may start; until then tell its place (``tell(text)``) whenever it changes.
    Raises :class:`Cancelled` when the call is cancelled while it waits."""
    told = None
    try:
        while not admission.try_start(ticket):
            if reporter.cancelled:
                raise Cancelled("run cancelled by the caller while it was queued (it never started)")
            place, text = admission.place(ticket), admission.why(ticket)
            if job is not None:
                job.place = place
            if text != told:
                told = text
                if job is not None:
                    job.note(0, None, text)
                await tell(text)
            await anyio.sleep(POLL_S)
    finally:
        if job is not None:
            job.place = None
    if told is not None and job is not None:
        job.note(0, None, "started")
