"""The Lab: settings + model cache + run store, shared by every experiment."""

import os
from dataclasses import dataclass, field
from pathlib import Path

from neurotrace.lab.model.cache import ModelCache, parse_bytes
from neurotrace.lab.runs import RunStore


@dataclass(frozen=True)
class LabSettings:
    """Server-level configuration (never set by a tool argument)."""

    runs_dir: Path = field(default_factory=lambda: Path("runs"))
    memory_budget_bytes: int | None = None
    trust_remote_code: bool = False

    @classmethod
    def from_env(cls, **overrides: object) -> "LabSettings":
        """NEUROTRACE_RUNS_DIR, NEUROTRACE_MEMORY_BUDGET ('8GiB'), NEUROTRACE_TRUST_REMOTE_CODE=1."""
        values: dict[str, object] = {
            "runs_dir": Path(os.environ.get("NEUROTRACE_RUNS_DIR", "runs")),
            "memory_budget_bytes": parse_bytes(os.environ.get("NEUROTRACE_MEMORY_BUDGET")),
            "trust_remote_code": os.environ.get("NEUROTRACE_TRUST_REMOTE_CODE", "") in ("1", "true", "yes"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


class Lab:
    def __init__(self, settings: LabSettings | None = None) -> None:
        self.settings = settings or LabSettings.from_env()
        self.cache = ModelCache(self.settings.memory_budget_bytes, self.settings.trust_remote_code)
        self.store = RunStore(self.settings.runs_dir)
