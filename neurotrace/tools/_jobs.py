"""Long jobs: experiment calls that outlive the request that started them.

A client that cannot wait minutes for one tool call either uses the MCP tasks extension (the server
answers ``tools/call`` with a task at once; ``tasks/get`` polls, ``tasks/result`` fetches,
``tasks/cancel`` stops) or passes ``"wait": false`` beside ``request``: the reply then carries the run
id at once, and ``run_status`` (or the run's manifest resource, which holds the progress) tells how it
goes; the finished result stays in the run as ``tool_result.json`` and can be fetched again at any time.

Both paths run the same job: the tool's own function, in a task of the server's lifespan task group,
with its run id reserved up front (the job id *is* the run id) and its reporter registered so a
cancel - or SIGTERM - stops the worker at its next ``reporter.step``.
"""

import logging
import threading
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.abc
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent

from neurotrace.lab.progress import Reporter

log = logging.getLogger("neurotrace.server")
TERMINAL = ("completed", "failed", "cancelled")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Job:
    """One detached experiment call; ``status`` uses the tasks vocabulary."""

    run_id: str
    tool: str
    reporter: Reporter = field(default_factory=Reporter)
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    status: str = "working"
    message: str = "started"
    progress: dict[str, Any] | None = None
    place: int | None = None  # its place in line while it waits for a slot (neurotrace.tools._queue)
    result: CallToolResult | None = None
    finished: anyio.Event = field(default_factory=anyio.Event)

    def note(self, done: float, total: float | None, message: str) -> None:
        self.progress = {"done": done, "total": total, "message": message}
        self.message, self.updated = message or self.message, _now()

    def view(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tool": self.tool, "status": self.status, "message": self.message,
                "progress": self.progress, "place": self.place, "created": self.created, "updated": self.updated}


# The job the current tool call runs as (unset for an ordinary, waited-for call).
CURRENT_JOB: ContextVar[Job | None] = ContextVar("neurotrace_job", default=None)
# Set while a tools/call reply is being shaped (see start_after_reply): jobs wait in it for the reply.
DEFERRED: ContextVar[list[Any] | None] = ContextVar("neurotrace_deferred", default=None)


class Jobs:
    """The detached jobs of one server lifespan, plus every live reporter (for SIGTERM)."""

    # worker thread -> its reporter, shared by every lifespan of this process (a run is open in one thread)
    _threads: dict[int, Reporter] = {}
    _threads_lock = threading.Lock()

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._live: dict[int, Reporter] = {}
        self._lock = threading.Lock()
        self._tg: anyio.abc.TaskGroup | None = None

    def bind(self, tg: anyio.abc.TaskGroup | None) -> None:
        self._tg = tg

    def get(self, run_id: str) -> Job | None:
        return self._jobs.get(run_id)

    def listing(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def bind_thread(self, reporter: Reporter) -> None:
        """The calling worker thread runs under ``reporter`` (see :meth:`reporter_of_thread`)."""
        with self._threads_lock:
            self._threads[threading.get_ident()] = reporter

    def unbind_thread(self) -> None:
        with self._threads_lock:
            self._threads.pop(threading.get_ident(), None)

    def reporter_of_thread(self, ident: int | None) -> Reporter | None:
        """The reporter of the worker thread ``ident`` (a waited call's run is found by the thread that opened
        it, so ``run_status`` with ``cancel`` can stop it from any connection)."""
        with self._threads_lock:
            return self._threads.get(ident) if ident is not None else None

    def track(self, reporter: Reporter) -> None:
        with self._lock:
            self._live[id(reporter)] = reporter

    def untrack(self, reporter: Reporter) -> None:
        with self._lock:
            self._live.pop(id(reporter), None)

    def cancel_all(self) -> int:
        """Ask every live worker to stop at its next step; how many were asked."""
        with self._lock:
            live = list(self._live.values())
        for reporter in live:
            reporter.cancel()
        return len(live)

    def live_count(self) -> int:
        with self._lock:
            return len(self._live)

    def start(self, run_id: str, tool: str, call: Callable[[], Awaitable[CallToolResult]]) -> Job:
        """Run ``call()`` as job ``run_id`` in the lifespan task group (CURRENT_JOB set inside it)."""
        if self._tg is None:
            raise RuntimeError("no lifespan task group to run detached jobs in")
        job = Job(run_id=run_id, tool=tool)
        self._jobs[run_id] = job

        async def body() -> None:
            token = CURRENT_JOB.set(job)
            try:
                job.result = await call()
                job.status = "failed" if job.result.is_error else "completed"
                if job.result.is_error and "cancelled" in _text(job.result):
                    job.status = "cancelled"
            except ToolError as exc:  # the tool's own refusal or cancel (a waited call's reply would carry it)
                text = str(exc).removeprefix(f"Error executing tool {tool}: ")
                job.result = CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
                job.status = "cancelled" if text.startswith("cancelled") else "failed"
            except BaseException as exc:  # cancelled with the lifespan, or a crash: recorded, not raised
                job.status = "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else "failed"
                job.result = CallToolResult(content=[TextContent(type="text", text=f"{tool}: {job.status}")],
                                            is_error=True)
                if isinstance(exc, anyio.get_cancelled_exc_class()):
                    raise
                log.error("job %s (%s) crashed", run_id, tool, exc_info=True)
            finally:
                CURRENT_JOB.reset(token)
                job.message, job.updated = (_text(job.result)[:200] if job.result else job.status), _now()
                job.finished.set()

        pending = DEFERRED.get()
        if pending is None:
            self._tg.start_soon(body)
        else:  # started once the reply that names it has been shaped, dropped if that failed
            tg = self._tg
            pending.append((self, run_id, lambda: tg.start_soon(body)))
        return job

    def drop(self, run_id: str) -> None:
        """Forget a job that never started (its reply failed)."""
        self._jobs.pop(run_id, None)


async def start_after_reply(ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
    """Server middleware: jobs a ``tools/call`` starts (``wait: false``, a task) begin only after its reply
    was shaped for the wire; if shaping (or anything before it) fails, they never run and are forgotten."""
    if ctx.method != "tools/call":
        return await call_next(ctx)
    pending: list[tuple[Jobs, str, Callable[[], None]]] = []
    token = DEFERRED.set(pending)
    try:
        result = await call_next(ctx)
    except BaseException:
        for jobs, run_id, _ in pending:
            jobs.drop(run_id)
        raise
    finally:
        DEFERRED.reset(token)
    for _, _, go in pending:
        go()
    return result


def _text(result: CallToolResult | None) -> str:
    if result is None:
        return ""
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))
