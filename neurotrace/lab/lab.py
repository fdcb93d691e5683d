"""The Lab: settings + model cache + run store, shared by every experiment."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel

from neurotrace.lab.inputs import DEFAULT_MAX_INPUT_BYTES, InputPolicy, default_input_roots
from neurotrace.lab.jobs import Admission, check_request, job_budget
from neurotrace.lab.model.weights.cache import ModelCache, parse_bytes, parse_device_bytes
from neurotrace.lab.runs import RunStore

# Forward rows one job may run by default: ~1,000x the README's main trace (8 facts x 10 samples x 3
# components x 18 layers x ~15 positions on gemma-3-270m, ~65,000 rows), so every documented example fits
# while a request for days of work (1,000 facts x 100 samples on a 48-layer model: ~500 million) is refused.
DEFAULT_MAX_JOB_ROWS = 50_000_000


@dataclass(frozen=True)
class LabSettings:
    """Server-level configuration (never set by a tool argument)."""

    runs_dir: Path = field(default_factory=lambda: Path("runs"))
    memory_budget_bytes: int | None = None
    trust_remote_code: bool = False
    input_dirs: tuple[Path, ...] | None = None  # files a request may name; None: runs dir + inputs/ beside it
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    threads: int | None = None  # torch intra-op threads; None: every core this process may use
    max_job_rows: int | None = DEFAULT_MAX_JOB_ROWS  # forward rows one job may run (budget); None: no limit
    gpu_budget_bytes: dict[str, int] | None = None  # per GPU ('cuda:0' -> bytes); None: 90% of each one
    max_jobs: int | None = None  # jobs running at once, server-wide (the rest queue); None: every available core

    @classmethod
    def from_env(cls, **overrides: object) -> "LabSettings":
        """NEUROTRACE_RUNS_DIR, NEUROTRACE_MEMORY_BUDGET ('8GiB'), NEUROTRACE_TRUST_REMOTE_CODE=1,
        NEUROTRACE_INPUT_DIRS (os.pathsep-separated), NEUROTRACE_MAX_INPUT_BYTES ('16MiB'),
        NEUROTRACE_THREADS (torch threads; default every available core), NEUROTRACE_MAX_JOB_ROWS (forward
        rows per job; default 50 million, '0' or 'off' for none), NEUROTRACE_GPU_MEMORY_BUDGET ('20GiB' for every GPU, or 'cuda:0=20GiB,cuda:1=40GiB'),
        NEUROTRACE_MAX_JOBS (jobs running at once; default the number of available cores)."""
        values: dict[str, object] = {
            "runs_dir": Path(os.environ.get("NEUROTRACE_RUNS_DIR", "runs")),
            "memory_budget_bytes": parse_bytes(os.environ.get("NEUROTRACE_MEMORY_BUDGET")),
            "trust_remote_code": os.environ.get("NEUROTRACE_TRUST_REMOTE_CODE", "") in ("1", "true", "yes"),
            "input_dirs": tuple(Path(p) for p in os.environ.get("NEUROTRACE_INPUT_DIRS", "").split(os.pathsep)
                                if p) or None,
            "max_input_bytes": parse_bytes(os.environ.get("NEUROTRACE_MAX_INPUT_BYTES")) or DEFAULT_MAX_INPUT_BYTES,
            "threads": int(os.environ["NEUROTRACE_THREADS"]) if os.environ.get("NEUROTRACE_THREADS") else None,
            "max_job_rows": _max_rows(os.environ.get("NEUROTRACE_MAX_JOB_ROWS")),
            "gpu_budget_bytes": parse_device_bytes(os.environ.get("NEUROTRACE_GPU_MEMORY_BUDGET")),
            "max_jobs": _max_jobs(os.environ.get("NEUROTRACE_MAX_JOBS")),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _max_rows(raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return DEFAULT_MAX_JOB_ROWS
    return None if raw.strip().lower() in ("0", "off", "none") else parse_bytes(raw)


def _max_jobs(raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"NEUROTRACE_MAX_JOBS must be a whole number of jobs, not {raw[:40]!r}") from None
    if value < 1:
        raise ValueError("NEUROTRACE_MAX_JOBS must be at least 1")
    return value


class Lab:
    def __init__(self, settings: LabSettings | None = None) -> None:
        self.settings = settings or LabSettings.from_env()
        self.threads = use_threads(self.settings.threads)
        self.store = RunStore(self.settings.runs_dir)
        self.cache = ModelCache(self.settings.memory_budget_bytes, self.settings.trust_remote_code,
                                gpu_budget_bytes=self.settings.gpu_budget_bytes, runs_root=self.store.root)
        roots = self.settings.input_dirs or default_input_roots(self.store.root)
        # server-wide: at most max_jobs jobs run at once, their memory estimates within the budget together
        self.admission = Admission(self.settings.max_jobs or available_cores(), job_budget(self))
        self.inputs = InputPolicy(roots=tuple(Path(r).expanduser().resolve() for r in roots),
                                  runs_root=self.store.root, max_bytes=self.settings.max_input_bytes)

    def check(self, request: BaseModel) -> None:
        """Refuse, before any work, a request out of bounds or a job over the budgets (``InputError``
        naming the field and the fix): the one check the MCP tools, the CLI and the Python API share. The
        tool's name and its cost model are the request type's own (``tool``, ``cost(lab)``)."""
        check_request(request, lab=self)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def use_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (default: every available core) and return it."""
    n = max(1, threads or available_cores())
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
