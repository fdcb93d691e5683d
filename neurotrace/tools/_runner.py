"""Run a lab experiment from a tool: worker thread, progress, cancellation, errors, rich content.

``run_in_lab(ctx, fn, request)`` calls ``fn(request, lab=lab, reporter=reporter)`` in a worker thread
(torch work never blocks the event loop). ``reporter.step(...)`` in the lab forwards progress to the
client; if the client cancels, the reporter's flag is set and the worker stops at its next step,
leaving the run marked ``cancelled``. A :class:`~neurotrace.lab.results.RunResult` becomes a
``CallToolResult`` with the structured result, a short text summary, the figures as images and a
resource link per artifact.
"""

import base64
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent, ToolAnnotations
from pydantic import BaseModel

from neurotrace.lab.lab import Lab
from neurotrace.lab.progress import Reporter
from neurotrace.lab.runs import URI_PREFIX
from neurotrace.tools._faults import tool_faults

log = logging.getLogger("neurotrace.server")

EXPERIMENT = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                             open_world_hint=False)
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)
MAX_IMAGES = 4


@dataclass
class AppContext:
    """What the lifespan holds for every request."""

    lab: Lab


def app_context(ctx: Context) -> AppContext:
    return ctx.request_context.lifespan_context


def lab_of(ctx: Context) -> Lab:
    return app_context(ctx).lab


async def run_in_lab(ctx: Context, fn: Callable[..., Any], request: Any) -> CallToolResult:
    """Run ``fn(request, lab=..., reporter=...)`` in a worker thread and package its result."""
    lab = lab_of(ctx)
    result = await call_in_thread(ctx, lambda reporter: fn(request, lab=lab, reporter=reporter))
    return package(result, lab)


async def call_in_thread(ctx: Context, work: Callable[[Reporter], Any]) -> Any:
    """Run ``work(reporter)`` in a thread with progress forwarding and cooperative cancellation."""
    done = threading.Event()

    def on_progress(done_units: float, total: float | None, message: str) -> None:
        try:
            anyio.from_thread.run(ctx.report_progress, done_units, total, message or None)
        except Exception:  # the request may be gone (cancelled); progress is best-effort
            log.debug("progress not delivered", exc_info=True)

    reporter = Reporter(on_progress=on_progress)

    def target() -> Any:
        try:
            with tool_faults():
                return work(reporter)
        finally:
            done.set()

    try:
        return await anyio.to_thread.run_sync(target, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        reporter.cancel()  # the worker stops at its next reporter.step and marks the run cancelled
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(done.wait)
        raise


def package(result: Any, lab: Lab) -> CallToolResult:
    """A result model -> CallToolResult (structured + summary text + images + resource links)."""
    data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    content: list[ContentBlock] = []
    summary = data.get("summary") if isinstance(data, dict) else None
    text = summary or ""
    if isinstance(data, dict) and data.get("next"):
        text += f"\n\nNext: {data['next']}"
    content.append(TextContent(type="text", text=text or str(data)))
    if isinstance(data, dict):
        for uri in list(data.get("figures") or [])[:MAX_IMAGES]:
            png = _read_artifact(lab, uri)
            if png is not None:
                content.append(ImageContent(type="image", data=base64.b64encode(png).decode(), mime_type="image/png"))
        for uri in data.get("artifacts") or []:
            name = uri.rsplit("/", 1)[-1]
            content.append(ResourceLink(type="resource_link", uri=uri, name=name,
                                        mime_type=_mime(name)))
    return CallToolResult(content=content, structured_content=data)


def _mime(name: str) -> str:
    from neurotrace.lab.runs import media_type

    return media_type(name)


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
