"""Job bounds: every request is checked before any work, field by field and as a whole.

A client controls the sizes of a job, so every experiment's ``run_x`` starts with
``lab.check(request)`` (:func:`check_request`; the MCP runner also calls it before starting a
job, the CLI and the Python API reach it through ``run_x``), which refuses, with an :class:`InputError`
naming the field:

* **per field** - every number finite and within a sane magnitude (``|x| <= 1e6`` for floats; ints
  below 2**31, seeds in ``[0, 2**63)``), strings without NUL and names/paths/devices at most 512
  characters, lists at most 100,000 items, and a device that exists here;
* **the whole job** - an estimate of its forward rows and peak bytes (rows x positions x layers x width
  of activations, SAE weights with Adam state, generation rows x tokens x vocabulary logits;
  each request's own ``cost(lab)``, with the units of :mod:`neurotrace.lab.jobs.estimates`) against the memory budget:
  ``NEUROTRACE_MEMORY_BUDGET`` (the same setting that bounds the model cache) or, unset, 80% of the
  RAM available when the server started; and its forward rows against ``NEUROTRACE_MAX_JOB_ROWS``
  (default :data:`~neurotrace.lab.lab.DEFAULT_MAX_JOB_ROWS`, 50 million). The refusal states the estimate, the limit and which fields to reduce.

The estimate is deliberately coarse (an upper bound with a guessed width where the model is not yet
loaded: :data:`neurotrace.lab.jobs.estimates.WIDTH_GUESS`); its purpose is to stop a 10 GB matrix before it is
allocated.
"""

import math
from collections.abc import Iterator
from typing import Any

import torch
from pydantic import BaseModel

from neurotrace.lab.errors import InputError
from neurotrace.lab.jobs.estimates import job_estimate, known_dims

MAX_FLOAT = 1e6
MAX_INT = 2**31 - 1
MAX_SEED = 2**63 - 1
MAX_NAME_CHARS = 512
MAX_LIST_ITEMS = 100_000
NAME_HINTS = ("model", "path", "file", "dir", "device", "site", "run", "uri")


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux); 8 GiB when it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 8 * 2**30


DEFAULT_BUDGET = int(available_bytes() * 0.8)


def job_budget(lab: Any) -> int:
    """The bytes a job may use: the configured memory budget, else 80% of RAM available at start-up."""
    configured = getattr(getattr(lab, "settings", None), "memory_budget_bytes", None)
    return int(configured) if configured else DEFAULT_BUDGET


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, (list, tuple)):
        yield path, value
        for i, item in enumerate(value[:MAX_LIST_ITEMS]):
            yield from _walk(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        yield path, value
    else:
        yield path, value


def _check_field(path: str, value: Any) -> None:
    leaf = path.rsplit(".", 1)[-1].split("[", 1)[0]
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_FLOAT:
            raise InputError(path, f"must be finite with magnitude at most {MAX_FLOAT:g}",
                             fix=f"give a value in [-{MAX_FLOAT:g}, {MAX_FLOAT:g}]")
    elif isinstance(value, int):
        seed = "seed" in leaf
        low, high = (0, MAX_SEED) if seed else (-MAX_INT, MAX_INT)
        if not low <= value <= high:
            raise InputError(path, f"is out of range (allowed: {low} .. {high})", fix="give a value in that range")
    elif isinstance(value, str):
        named = any(h in leaf for h in NAME_HINTS)
        if named and ("\x00" in value or len(value) > MAX_NAME_CHARS):
            raise InputError(path, f"must be at most {MAX_NAME_CHARS} characters without NUL",
                             fix="give a shorter name or path")
    elif isinstance(value, (list, tuple, dict)) and len(value) > MAX_LIST_ITEMS:
        raise InputError(path, f"has {len(value)} items (at most {MAX_LIST_ITEMS})", fix="split the job")
    if leaf == "device" and isinstance(value, str):
        check_device(path, value)


def check_device(path: str, device: str) -> None:
    """Only devices this machine has: cpu, auto, cuda[:N] with CUDA present, mps with MPS present."""
    name, _, index = device.partition(":")
    ok = name in ("cpu", "auto") and not index
    if name == "cuda" and torch.cuda.is_available():
        ok = not index or (index.isdigit() and int(index) < torch.cuda.device_count())
    if name == "mps" and not index:
        ok = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if not ok:
        have = ["cpu", "auto"] + (["cuda"] if torch.cuda.is_available() else [])
        raise InputError(path, f"device {device[:40]!r} is not available on this server",
                         fix=f"use one of {have}")


def check_request(request: Any, *, lab: Any) -> None:
    """Refuse an out-of-bounds field, or a job whose estimate (the request's own ``cost``) exceeds the
    memory budget or the configured forward-row limit, before any work. The one check every face runs
    (MCP runner, CLI, Python API: each experiment's ``run_x`` starts with ``lab.check(request)``)."""
    for path, value in _walk(request, ""):
        _check_field(path, value)
    shape_check = getattr(request, "shape_check", None)
    if callable(shape_check):   # layer, head and neuron indices against the model's real shape, before any load
        dims = known_dims(lab, getattr(request, "model", None))
        if dims is not None:
            shape_check(dims)
    tool = getattr(type(request), "tool", "this")
    job = job_estimate(request, lab)
    field = job.fields[0] if job.fields else "request"
    reduce = ", ".join(job.fields) or "the request's sizes"
    rows = f" ({job.rows:,} forward rows)" if job.rows else ""
    limit = job_budget(lab)
    if job.bytes > limit:
        raise InputError(field, f"this {tool} job needs about {_gib(job.bytes)} of memory{rows}, over the limit "
                         f"of {_gib(limit)}",
                         fix=f"reduce {reduce} (or raise NEUROTRACE_MEMORY_BUDGET on a bigger machine)")
    max_rows = getattr(getattr(lab, "settings", None), "max_job_rows", None)
    if max_rows and job.rows > max_rows:
        raise InputError(field, f"this {tool} job runs about {job.rows:,} forward rows, over the limit of "
                         f"{max_rows:,}", fix=f"reduce {reduce} (or raise NEUROTRACE_MAX_JOB_ROWS)")


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"
