"""The MCP tasks extension (``io.modelcontextprotocol/tasks``) over neurotrace's detached jobs.

Where the client declares the extension (``capabilities.extensions``), an experiment tool's
``tools/call`` answers at once with a task (``resultType: "task"``, a ``CreateTaskResult`` whose task
id is the run id); ``tasks/get`` polls it, ``tasks/result`` waits for and returns the tool's ``CallToolResult``,
``tasks/cancel`` stops it (the run ends ``cancelled``), ``tasks/list`` lists them. The installed SDK
(mcp 2.3) carries the task types but no task machinery, so this extension provides the methods through
the SDK's :class:`~mcp.server.extension.Extension` interface (``methods`` + ``intercept_tool_call``).
"""

from collections.abc import Callable
from typing import Any

import mcp_types as types
from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import INVALID_PARAMS

from neurotrace.tools._jobs import Job, Jobs

IDENTIFIER = "io.modelcontextprotocol/tasks"
POLL_MS = 1000
TTL_MS = 24 * 3600 * 1000  # results stay readable from the run directory after this too


def task_view(job: Job) -> dict[str, Any]:
    return {"task_id": job.run_id, "status": job.status, "status_message": job.message[:200],
            "created_at": job.created, "last_updated_at": job.updated, "ttl": TTL_MS, "poll_interval": POLL_MS}


class TasksExtension(Extension):
    """tasks/get, tasks/result, tasks/cancel, tasks/list + task-augmented tools/call for experiment tools."""

    identifier = IDENTIFIER

    def __init__(self, jobs_of: Callable[[Any], Jobs], start: Callable[..., Any], waitable: frozenset[str]) -> None:
        self.jobs_of = jobs_of        # ServerRequestContext -> Jobs of its lifespan
        self.start = start            # async (name, arguments, ctx) -> Job
        self.waitable = waitable

    def settings(self) -> dict[str, Any]:
        return {"requests": {"tools": {"call": {}}}, "list": {}, "cancel": {}}

    def methods(self) -> list[MethodBinding]:
        return [MethodBinding("tasks/get", types.GetTaskRequestParams, self._get),
                MethodBinding("tasks/result", types.GetTaskPayloadRequestParams, self._result),
                MethodBinding("tasks/cancel", types.CancelTaskRequestParams, self._cancel),
                MethodBinding("tasks/list", types.PaginatedRequestParams, self._list)]

    async def intercept_tool_call(self, params: types.CallToolRequestParams, ctx: Any, call_next: Any) -> Any:
        declared = (ctx.session.client_capabilities.extensions or {}) if ctx.session.client_capabilities else {}
        if IDENTIFIER not in declared or params.name not in self.waitable:
            return await call_next(ctx)
        job = await self.start(params.name, dict(params.arguments or {}), ctx)
        if isinstance(job, types.CallToolResult):  # the arguments were refused before any work
            return job
        task = types.Task(**task_view(job)).model_dump(by_alias=True, mode="json")
        return {"task": task, "resultType": "task"}  # a dict: the SDK's models drop resultType when dumped

    def _job(self, ctx: Any, task_id: str) -> Job:
        job = self.jobs_of(ctx).get(task_id)
        if job is None:
            raise MCPError(code=INVALID_PARAMS, message=f"taskId: no task {task_id!r} in this server. Fix: use the "
                           "task id a task-augmented tools/call returned, or read neurotrace://runs")
        return job

    async def _get(self, ctx: Any, params: types.GetTaskRequestParams) -> types.GetTaskResult:
        return types.GetTaskResult(**task_view(self._job(ctx, params.task_id)))

    async def _result(self, ctx: Any, params: types.GetTaskPayloadRequestParams) -> types.CallToolResult:
        job = self._job(ctx, params.task_id)
        await job.finished.wait()
        assert job.result is not None  # set before finished
        return job.result

    async def _cancel(self, ctx: Any, params: types.CancelTaskRequestParams) -> types.CancelTaskResult:
        job = self._job(ctx, params.task_id)
        if job.status not in ("completed", "failed", "cancelled"):
            job.reporter.cancel()
        return types.CancelTaskResult(**task_view(job))

    async def _list(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListTasksResult:
        return types.ListTasksResult(tasks=[types.Task(**task_view(j)) for j in self.jobs_of(ctx).listing()])
