"""MCP face of run_status: how is a run doing, and what did it return? (no lab experiment behind it)."""

from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from neurotrace.lab.errors import LabError
from neurotrace.lab.runs import URI_PREFIX
from neurotrace.tools._faults import scrub
from neurotrace.tools._runner import app_context


async def run_status(run_id: str, ctx: Context, cancel: bool = False) -> dict[str, Any]:
    """How far is a run (started with wait=false or as a task), and what did it return? Poll until done.

    Returns status (queued/running/complete/failed/cancelled/interrupted), the last progress or place in
    line, and for a finished run its tool result (the reply the call would have given). cancel=true stops it.
    """
    app = app_context(ctx)
    job = app.jobs.get(run_id)
    if cancel and job is not None and not job.finished.is_set():
        job.reporter.cancel()
    elif cancel and job is None:  # a waited call (any connection of this server): stop it through its thread
        waited = app.jobs.reporter_of_thread(app.lab.store.opener(run_id)) if len(run_id) <= 200 else None
        if waited is not None:
            waited.cancel()
    try:
        manifest = app.lab.store.manifest(run_id)
    except LabError as exc:
        if job is None:
            raise ToolError(scrub(str(exc))) from exc
        # no run directory yet: the job waits for a slot, or ended before it started (cancelled while queued)
        if job.finished.is_set():
            status = "cancelled" if job.status == "cancelled" else "failed"
        else:
            status = "queued" if job.place is not None else "running"
        out = {"run_id": run_id, "status": status, "progress": job.progress, "message": job.message,
               "result": None}
        if status == "queued":
            out["place"] = job.place
        return out
    status = manifest.status
    if job is not None and not job.finished.is_set() and status != "running":
        status = "running"  # the run is closed; its result is being packaged
    elif status == "complete" and manifest.result_pending and not (manifest.owner and manifest.owner.gone()):
        status = "running"  # another connection's server is keeping the result; it follows in a moment
    out: dict[str, Any] = {"run_id": run_id, "status": status, "progress": manifest.progress or
                           (job.progress if job else None), "error": manifest.error, "summary": manifest.summary,
                           "manifest": f"{URI_PREFIX}/{run_id}/manifest"}
    if status != "running" and any(a.path == "tool_result.json" for a in manifest.artifacts):
        kept = app.lab.store.read_json(run_id, "tool_result.json")
        out["result"] = kept.get("structuredContent")
        out["result_uri"] = f"{URI_PREFIX}/{run_id}/artifacts/tool_result.json"
    return out
