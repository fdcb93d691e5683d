"""The MCP tasks extension (``io.modelcontextprotocol/tasks``, 2026-07-28) over neurotrace's detached jobs.

Task creation is the server's choice, per request, and only where it can be delivered: the negotiated
protocol is a 2026-era one (a claimed ``resultType`` cannot travel on a handshake-era wire, where the
SDK validates every ``tools/call`` reply as a ``CallToolResult``) *and* the request's own capabilities
list the extension. Then an experiment tool's ``tools/call`` answers at once with a flat
``CreateTaskResult`` (``resultType: "task"``, ``taskId`` = the run id); ``tasks/get`` polls it and
carries the tool's ``CallToolResult`` as ``result`` once completed; ``tasks/cancel`` stops it (the run
ends ``cancelled``); ``tasks/update`` acknowledges (no task here ever waits for input). Two
conveniences beyond the spec: ``tasks/result`` waits for and returns the ``CallToolResult``, and
``tasks/list`` lists this server's tasks. Every other call - a 2025-era client that declares the
extension or sends ``params.task`` included - runs as an ordinary call. The extension's methods are
bound to 2026-era versions only, and ``capabilities.extensions`` is not part of a handshake-era
``InitializeResult``, so the extension is advertised exactly where it works.

A job behind a task starts only after the task reply was shaped for the wire
(:func:`start_after_reply`): a reply that fails never leaves a job running behind it.
"""

from collections.abc import Callable
from typing import Any

import mcp_types as types
from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import INVALID_PARAMS, MISSING_REQUIRED_CLIENT_CAPABILITY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ConfigDict, Field

from neurotrace.tools._jobs import Job, Jobs

IDENTIFIER = "io.modelcontextprotocol/tasks"
POLL_MS = 1000
TTL_MS = 24 * 3600 * 1000  # results stay readable from the run directory after this too
VERSIONS = frozenset(MODERN_PROTOCOL_VERSIONS)


class TaskIdParams(types.RequestParams):
    """``{taskId}`` (tasks/get, tasks/cancel, tasks/result)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    task_id: str = Field(alias="taskId", max_length=200)


class UpdateParams(TaskIdParams):
    input_responses: dict[str, Any] = Field(default_factory=dict, alias="inputResponses")


def declares(ctx: Any) -> bool:
    """This request may be answered with a task: 2026-era protocol and the extension in its capabilities."""
    if getattr(ctx, "protocol_version", None) not in VERSIONS:
        return False
    caps = ctx.session.client_capabilities
    return caps is not None and IDENTIFIER in (caps.extensions or {})


def task_status(job: Job) -> str:
    """The spec's status: a tool result, error or not, is ``completed`` (``failed`` is for JSON-RPC errors)."""
    if job.status == "cancelled":
        return "cancelled"
    return "completed" if job.finished.is_set() else "working"


def task_view(job: Job, with_result: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {"taskId": job.run_id, "status": task_status(job), "statusMessage": job.message[:200],
                            "createdAt": job.created, "lastUpdatedAt": job.updated, "ttlMs": TTL_MS,
                            "pollIntervalMs": POLL_MS}
    if with_result and view["status"] == "completed" and job.result is not None:
        view["result"] = job.result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return view


class TasksExtension(Extension):
    """Task-augmented ``tools/call`` for experiment tools, plus tasks/get|update|cancel (+ result, list)."""

    identifier = IDENTIFIER

    def __init__(self, jobs_of: Callable[[Any], Jobs], start: Callable[..., Any], waitable: frozenset[str]) -> None:
        self.jobs_of = jobs_of        # ServerRequestContext -> Jobs of its lifespan
        self.start = start            # async (name, arguments, ctx) -> Job | CallToolResult (refused)
        self.waitable = waitable

    def settings(self) -> dict[str, Any]:
        return {}  # the 2026-07-28 extension defines no settings: an empty object says "supported"

    def methods(self) -> list[MethodBinding]:
        return [MethodBinding(name, params, handler, protocol_versions=VERSIONS) for name, params, handler in (
            ("tasks/get", TaskIdParams, self._get), ("tasks/update", UpdateParams, self._update),
            ("tasks/cancel", TaskIdParams, self._cancel), ("tasks/result", TaskIdParams, self._result),
            ("tasks/list", types.PaginatedRequestParams, self._list))]

    async def intercept_tool_call(self, params: types.CallToolRequestParams, ctx: Any, call_next: Any) -> Any:
        args = params.arguments or {}
        if params.name not in self.waitable or not declares(ctx) or args.get("wait") is False \
                or args.get("dry_run") is True:
            return await call_next(ctx)
        job = await self.start(params.name, dict(params.arguments or {}), ctx)
        if isinstance(job, types.CallToolResult):  # the arguments were refused before any work
            return job
        return {"resultType": "task", **task_view(job)}

    def _job(self, ctx: Any, task_id: str) -> Job:
        if not declares(ctx):
            raise MCPError(code=MISSING_REQUIRED_CLIENT_CAPABILITY, message="Missing required client capability: "
                           f"{IDENTIFIER}. Fix: declare it in the request's client capabilities",
                           data={"requiredCapabilities": {"extensions": {IDENTIFIER: {}}}})
        job = self.jobs_of(ctx).get(task_id)
        if job is None:
            raise MCPError(code=INVALID_PARAMS, message=f"taskId: no task {task_id[:80]!r} in this server. Fix: "
                           "use the taskId a tools/call returned, or read neurotrace://runs")
        return job

    async def _get(self, ctx: Any, params: TaskIdParams) -> dict[str, Any]:
        return task_view(self._job(ctx, params.task_id), with_result=True)

    async def _update(self, ctx: Any, params: UpdateParams) -> dict[str, Any]:
        self._job(ctx, params.task_id)
        return {}  # no task here asks for input; responses to unknown keys are ignored (spec)

    async def _cancel(self, ctx: Any, params: TaskIdParams) -> dict[str, Any]:
        job = self._job(ctx, params.task_id)
        if not job.finished.is_set():
            job.reporter.cancel()
        return {}

    async def _result(self, ctx: Any, params: TaskIdParams) -> types.CallToolResult:
        job = self._job(ctx, params.task_id)
        await job.finished.wait()
        assert job.result is not None  # set before finished
        return job.result

    async def _list(self, ctx: Any, params: types.PaginatedRequestParams | None) -> dict[str, Any]:
        if not declares(ctx):
            self._job(ctx, "")
        return {"tasks": [task_view(j) for j in self.jobs_of(ctx).listing()]}
