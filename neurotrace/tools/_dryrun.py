"""The cost of a call before the work: ``"dry_run": true`` beside ``request``, and the throughput behind it.

A dry run validates the request, runs every check that needs no forward (the lab's bounds, a prompt file
read and counted) and answers with the whole-job estimate: forward rows, peak memory, the limits they are
held to and the seconds it would take *here*, from one of two throughputs:

* **learned**: once this server has finished a call of the same tool on the same model at the same
  ``precision``, that call's rows per second of wall time (model loading excluded when the model was already
  loaded);
* **measured at start-up** (before any such call): this machine's float32 matmul rate, timed once per
  process on a small product (:func:`neurotrace.lab.jobs.estimates.machine_flops`, about 0.1 s), turned into
  seconds by the model's multiply-adds per token (:func:`~neurotrace.lab.jobs.estimates.token_flops`),
  :data:`TOKENS_PER_ROW` token-forwards an estimated row (the estimate counts every restored run as a whole
  prompt at upper-bound positions; the grids share the clean prefix and batch), plus :data:`OVERHEAD_S` of
  fixed cost (figures, files). Fitted on traces of fact-gpt2, gemma-3-270m and smollm2-135m-instruct on a
  2-core machine under load (2026-12-07: prior / measured between 0.6 and 3.4); a rough prior elsewhere;
  none when the model's shape is unknown.

The estimate also gives a long call's first progress message its ETA, and a waited call estimated over
:data:`DETACH_HINT_S` says how to run detached next time.
"""

import threading
from typing import Any

from mcp_types import CallToolResult, TextContent

from neurotrace.lab.jobs import GUESS, dims_of, job_budget, job_estimate, machine_flops, token_flops
from neurotrace.lab.lab import Lab

DETACH_HINT_S = 180.0
TOKENS_PER_ROW = 0.2       # token-forwards one estimated forward row costs (fitted: see the module docstring)
OVERHEAD_S = 2.0           # a call's fixed cost beside its forwards (figures, files, the result)
_rates: dict[tuple[str, str, str], float] = {}   # (tool, model, precision) -> rows per second, the latest call's
_lock = threading.Lock()


def model_of(request: Any) -> str:
    """The model a request names (the first of ``models``), '' when it names none."""
    model = getattr(request, "model", None)
    if isinstance(model, str):
        return model
    models = getattr(request, "models", None)
    return str(models[0]) if isinstance(models, (list, tuple)) and models else ""


def precision_of(request: Any) -> str:
    """The precision a request asks for ('float32' for tools without the option)."""
    precision = getattr(request, "precision", None)
    return precision if isinstance(precision, str) else "float32"


def learn(tool: str, rows: int, seconds: float, model: str = "", precision: str = "float32") -> None:
    """Record a completed call's throughput (its estimated rows over its wall time)."""
    if rows > 0 and seconds > 0:
        with _lock:
            _rates[(tool, model, precision)] = rows / seconds


def seconds_for(tool: str, rows: int, lab: Any = None, model: str = "", precision: str = "float32"
                ) -> tuple[float | None, str]:
    """Seconds a job of ``rows`` forward rows of ``tool`` on ``model`` at ``precision`` should take here, and
    their basis: the throughput learned from this server's last such call, else the start-up matmul
    measurement (float32's: a bfloat16 call is then over-estimated, usually 2-3x)."""
    if rows <= 0:
        return None, "no forward rows"
    with _lock:
        rate = _rates.get((tool, model, precision))
    at = "" if precision == "float32" else f" in {precision}"
    if rate is not None:
        return rows / rate, f"this server's last completed {tool} call on {model or 'its model'}{at}"
    d = dims_of(lab, model) if model else GUESS
    if d is GUESS:
        return None, f"none yet: the model's shape is unknown until it is loaded or a {tool} call completes"
    flops = machine_flops()
    seconds = OVERHEAD_S + rows * TOKENS_PER_ROW * token_flops(d) / flops
    return seconds, (f"a prior: this machine's matmul rate measured at start-up ({flops / 1e9:.0f} GFLOP/s) and "
                     f"the model's size (rough, a few x, until a {tool} call on it{at} completes)"
                     + ("; float32's rate, so a bfloat16 call is likely 2-3x quicker" if at else ""))


def estimate_of(lab: Lab, request: Any) -> dict[str, Any]:
    """The structured estimate of ``request`` (no forward; refusals are the caller's to raise)."""
    tool = str(getattr(type(request), "tool", "") or "")
    est = job_estimate(request, lab)
    seconds, basis = seconds_for(tool, est.rows, lab, model_of(request), precision_of(request))
    max_rows = getattr(lab.settings, "max_job_rows", None)
    return {"forward_rows": est.rows, "peak_bytes": est.bytes, "memory_limit_bytes": job_budget(lab),
            "max_job_rows": max_rows, "seconds": None if seconds is None else round(seconds, 1),
            "seconds_basis": basis, "size_fields": list(est.fields)}


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
