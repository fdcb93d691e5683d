"""Run a lab experiment from a tool: worker thread, progress, cancellation, errors, rich content.

``run_in_lab(ctx, fn, request)`` calls ``fn(request, lab=lab, reporter=reporter)`` in a worker thread
(torch work never blocks the event loop). ``reporter.step(...)`` in the lab forwards progress to the
client; if the client cancels, the reporter's flag is set and the worker stops at its next step,
leaving the run marked ``cancelled``. A :class:`~neurotrace.lab.results.RunResult` becomes a
``CallToolResult`` with the structured result, a short text summary, the figures as images and a
resource link per artifact, within the agent-sized budgets: text <= 2K characters, at most
:data:`INLINE_IMAGES` inline images (the first figure, the one that answers the question; the
others become resource links; server setting ``NEUROTRACE_INLINE_IMAGES``).

A call that runs as a detached job (:mod:`neurotrace.tools._jobs`) uses the job's reporter and
reserved run id, and keeps its progress in the run's manifest; every finished run keeps its packaged
result as ``tool_result.json``.
"""

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent, ToolAnnotations
from pydantic import BaseModel

from neurotrace.lab.jobs import job_estimate
from neurotrace.lab.lab import Lab
from neurotrace.lab.progress import Reporter
from neurotrace.lab.runs import URI_PREFIX, media_type
from neurotrace.tools._dryrun import detach_hint, eta_text, learn, model_of, precision_of, seconds_for
from neurotrace.tools._faults import tool_faults
from neurotrace.tools._jobs import CURRENT_JOB, Jobs
from neurotrace.tools._queue import wait_turn
from neurotrace.tools._report_ui import report_blocks

log = logging.getLogger("neurotrace.server")

EXPERIMENT = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                             open_world_hint=False)
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)
INLINE_IMAGES = int(os.environ.get("NEUROTRACE_INLINE_IMAGES", "1") or 1)
MAX_TEXT_CHARS = 2000
MAX_STRUCTURED_CHARS = 8000


@dataclass
class AppContext:
    """What the lifespan holds for every request."""

    lab: Lab
    jobs: Jobs


def app_context(ctx: Context) -> AppContext:
    return ctx.request_context.lifespan_context


def lab_of(ctx: Context) -> Lab:
    return app_context(ctx).lab


async def run_in_lab(ctx: Context, fn: Callable[..., Any], request: Any) -> CallToolResult:
    """Run ``fn(request, lab=..., reporter=...)`` in a worker thread and package its result."""
    lab = lab_of(ctx)
    with tool_faults():
        lab.check(request)  # run_x checks again; here it refuses before a detached job starts
        estimate = job_estimate(request, lab)
    rows = estimate.rows
    tool = str(getattr(type(request), "tool", "") or "")
    model = model_of(request)
    precision = precision_of(request)
    eta, _ = seconds_for(tool, rows, lab, model, precision)
    job = CURRENT_JOB.get()
    try:
        started = time.perf_counter()
        result = await call_in_thread(ctx, lambda reporter: fn(request, lab=lab, reporter=reporter), eta=eta,
                                      need=estimate.bytes, tool=tool)
        learn(tool, rows, time.perf_counter() - started, model, precision)
        packaged = package(result, lab)
        hint = detach_hint(eta) if job is None else None
        if hint:
            packaged.content.append(TextContent(type="text", text=hint))
        run_id = (packaged.structured_content or {}).get("run_id")
        if isinstance(run_id, str):
            try:
                lab.store.attach_result(run_id, packaged.model_dump(mode="json", by_alias=True, exclude_none=True))
            except Exception:  # the result was still delivered; keeping a copy is best effort
                log.warning("could not keep the result of run %s", run_id, exc_info=True)
    finally:
        if job is not None:
            lab.store.settle_result(job.run_id)   # a detached run's manifest promised its result
    packaged.content.extend(report_blocks(ctx, lab, packaged.structured_content))   # link; page for Apps clients
    return packaged


def check_before_start(lab: Lab, parsed: dict[str, Any]) -> None:
    """The lab's bounds for a call about to run detached (``wait: false``, tasks), on its validated
    arguments ({name: value}): an oversize job is refused before it gets a run id."""
    request = parsed.get("request")
    if isinstance(request, BaseModel):
        with tool_faults():
            lab.check(request)


async def call_in_thread(ctx: Context, work: Callable[[Reporter], Any], eta: float | None = None, need: int = 0,
                         tool: str = "") -> Any:
    """Run ``work(reporter)`` in a thread with progress forwarding and cooperative cancellation (the first
    progress message carries ``eta``, the estimated seconds, when there is one). The job first waits for a
    server-wide slot (:mod:`neurotrace.tools._queue`): ``need`` is its memory estimate in bytes."""
    done = threading.Event()
    claim = threading.Lock()  # taken once: by the worker (it runs the work) or by a cancel before it starts
    job, app = CURRENT_JOB.get(), app_context(ctx)
    lab = app.lab

    first = [True]

    def on_progress(done_units: float, total: float | None, message: str) -> None:
        if first[0]:
            first[0], message = False, (message or "started") + eta_text(eta)
        if job is not None:
            job.note(done_units, total, message)
            lab.store.note_progress(job.run_id, done_units, total, message)
            return
        try:
            anyio.from_thread.run(ctx.report_progress, done_units, total, message or None)
        except Exception:  # the request may be gone (cancelled); progress is best-effort
            log.debug("progress not delivered", exc_info=True)

    reporter = Reporter(on_progress=on_progress, cancel_event=job.reporter.cancel_event if job else threading.Event())

    def target() -> Any:
        if not claim.acquire(blocking=False):
            return None  # cancelled before this thread began: nothing ran, nothing to stop
        app.jobs.bind_thread(reporter)   # run_status(cancel) finds a waited call's run through its thread
        try:
            with tool_faults():
                if job is None:
                    return work(reporter)
                with lab.store.reserved_id(job.run_id):
                    return work(reporter)
        finally:
            app.jobs.unbind_thread()
            done.set()

    async def tell(text: str) -> None:
        if job is None:
            try:
                await ctx.report_progress(0, None, text)
            except Exception:  # progress is best-effort
                log.debug("queue place not delivered", exc_info=True)

    app.jobs.track(reporter)
    ticket = lab.admission.enter(need, tool)
    try:
        with tool_faults():
            await wait_turn(lab.admission, ticket, reporter, job, tell)
        return await anyio.to_thread.run_sync(target, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        reporter.cancel()  # the worker stops at its next reporter.step and marks the run cancelled
        if not claim.acquire(blocking=False):  # the worker began (else done would never be set)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(done.wait)
        raise
    finally:
        lab.admission.leave(ticket)
        app.jobs.untrack(reporter)


def package(result: Any, lab: Lab) -> CallToolResult:
    """A result model -> CallToolResult (structured + summary text + images + resource links), in budget."""
    data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    content: list[ContentBlock] = [TextContent(type="text", text=_text(data))]
    if isinstance(data, dict):
        figures = list(data.get("figures") or [])
        for uri in figures[:INLINE_IMAGES]:
            png = _read_artifact(lab, uri)
            if png is not None:
                content.append(ImageContent(type="image", data=base64.b64encode(png).decode(), mime_type="image/png"))
        linked = {str(u) for u in figures[:INLINE_IMAGES]}
        for uri in [*figures[INLINE_IMAGES:], *(data.get("artifacts") or [])]:
            if str(uri) in linked:
                continue
            linked.add(str(uri))
            name = str(uri).rsplit("/", 1)[-1]
            content.append(ResourceLink(type="resource_link", uri=uri, name=name, mime_type=media_type(name)))
        size = len(json.dumps(data))
        if size > MAX_STRUCTURED_CHARS:
            log.warning("structured result of %s is %d characters (budget %d)", data.get("run_id"), size,
                        MAX_STRUCTURED_CHARS)
    return CallToolResult(content=content, structured_content=data)


def _text(data: Any) -> str:
    """Summary + next hint, at most MAX_TEXT_CHARS (the rest is in the run's manifest and report)."""
    if not isinstance(data, dict):
        return str(data)[:MAX_TEXT_CHARS]
    summary = data.get("summary") or ""
    tail = f"\n\nNext: {data['next']}" if data.get("next") else ""
    if len(summary) + len(tail) > MAX_TEXT_CHARS:
        more = (f" ... (cut; full summary: {URI_PREFIX}/{data['run_id']}/manifest)" if data.get("run_id")
                else " ... (cut)")
        summary = summary[: max(0, MAX_TEXT_CHARS - len(tail) - len(more))] + more
        tail = tail[: MAX_TEXT_CHARS - len(summary)]
    return (summary + tail) or json.dumps(data)[:MAX_TEXT_CHARS]


def _read_artifact(lab: Lab, uri: str) -> bytes | None:
    prefix = URI_PREFIX + "/"
    if not uri.startswith(prefix) or "/artifacts/" not in uri:
        return None
    run_id, rel = uri[len(prefix):].split("/artifacts/", 1)
    try:
        return lab.store.artifact_path(run_id, rel).read_bytes()
    except Exception:
        log.warning("figure %s could not be read", uri)
        return None
