"""The cost of a call before the work: ``"dry_run": true`` beside ``request``, and the throughput behind it.

A dry run validates the request, runs every check that needs no forward (the lab's bounds, a prompt file
read and counted) and answers with the whole-job estimate: forward rows, peak memory, the limits they are
held to and, once this server has finished a run of the same tool, the seconds it would take *here*: the
tool's throughput (estimated forward rows per second of wall time, model loading excluded when the model
was already loaded) is learned from every completed call of this server. The estimate also gives a long
call's first progress message its ETA, and a waited call estimated over :data:`DETACH_HINT_S` says how to
run detached next time.
"""

import threading
from typing import Any

from mcp_types import CallToolResult, TextContent

from neurotrace.lab.budget import job_budget, job_estimate
from neurotrace.lab.lab import Lab

DETACH_HINT_S = 180.0
_rates: dict[str, float] = {}          # tool -> forward rows per second, the latest completed call's
_lock = threading.Lock()


def learn(tool: str, rows: int, seconds: float) -> None:
    """Record a completed call's throughput (its estimated rows over its wall time)."""
    if rows > 0 and seconds > 0:
        with _lock:
            _rates[tool] = rows / seconds


def seconds_for(tool: str, rows: int) -> float | None:
    """Seconds a job of ``rows`` forward rows of ``tool`` should take here; None before any measurement."""
    with _lock:
        rate = _rates.get(tool)
    return None if rate is None or rows <= 0 else rows / rate


def estimate_of(lab: Lab, request: Any) -> dict[str, Any]:
    """The structured estimate of ``request`` (no forward; refusals are the caller's to raise)."""
    tool = str(getattr(type(request), "tool", "") or "")
    est = job_estimate(request, lab)
    seconds = seconds_for(tool, est.rows)
    max_rows = getattr(lab.settings, "max_job_rows", None)
    return {"forward_rows": est.rows, "peak_bytes": est.bytes, "memory_limit_bytes": job_budget(lab),
            "max_job_rows": max_rows, "seconds": None if seconds is None else round(seconds, 1),
            "seconds_basis": ("this server's last completed " + tool + " call" if seconds is not None else
                              "none yet: measured from this server's first completed " + tool + " call"),
            "size_fields": list(est.fields)}


def dry_run_result(lab: Lab, request: Any) -> CallToolResult:
    """The reply to a dry run: the estimate, after the same checks a real call makes first."""
    lab.check(request)   # bounds, forward-free checks and the budgets: a refusal is the same typed error
    est = estimate_of(lab, request)
    tool = getattr(type(request), "tool", "this tool")
    took = f"about {est['seconds']:.0f} s here" if est["seconds"] is not None else "time unknown until one runs"
    text = (f"Dry run of {tool}: about {est['forward_rows']:,} forward rows, peak memory about "
            f"{est['peak_bytes'] / 2**20:,.0f} MiB (limit {est['memory_limit_bytes'] / 2**20:,.0f} MiB), {took}. "
            "Nothing ran. Next: the same call without dry_run"
            + (' (with "wait": false: it is long)' if (est["seconds"] or 0) > DETACH_HINT_S else "") + ".")
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content={"run_id": None, "status": "dry_run", "estimate": est})


def eta_text(seconds: float | None) -> str:
    return "" if seconds is None else f" (estimated {seconds:.0f} s in all)"


def detach_hint(seconds: float | None) -> str | None:
    if seconds is None or seconds <= DETACH_HINT_S:
        return None
    return (f"This call was estimated at about {seconds / 60:.0f} min. Next time pass \"wait\": false beside "
            "request to run it detached (the reply is the run_id at once; poll run_status).")
