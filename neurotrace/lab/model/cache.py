"""The model cache: load once, share, evict under a memory budget.

* One load per key (model, kind, backend, dtype, device), even when many requests ask at once: the
  first caller loads while the others wait on that key's lock.
* LRU eviction when a new model would exceed ``budget_bytes``; models in use (leased) are never
  evicted. A model larger than the whole budget is refused with :class:`OverBudget`.
* ``lease(ref)`` is how experiments use a model: it loads (or reuses) it, holds the model's lock for
  the block (hooks are attached only under it) and keeps it from being evicted.
"""

import gc
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from neurotrace.lab.errors import NotFound, OverBudget
from neurotrace.lab.model import catalog
from neurotrace.lab.model.loading import LoadedModel, ModelRef, cache_key, load


def parse_bytes(text: str | int | None) -> int | None:
    """'4GiB' / '512MB' / '1000000' -> bytes; None/'' -> None (no budget)."""
    if text is None or text == "":
        return None
    if isinstance(text, int):
        return text
    s = text.strip().lower().replace(" ", "")
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9, "b": 1}
    for unit, mult in units.items():
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mult)
    return int(float(s))


class ModelCache:
    def __init__(self, budget_bytes: int | None = None, trust_remote_code: bool = False) -> None:
        self.budget_bytes = budget_bytes
        self.trust_remote_code = trust_remote_code
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._leases: dict[str, int] = {}
        self._key_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.load_count: dict[str, int] = {}

    # -- loading -----------------------------------------------------------------------------
    def get(self, ref: ModelRef) -> LoadedModel:
        """The loaded model for ``ref``, loading it once if needed."""
        key = cache_key(ref)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._models:
                    self._models.move_to_end(key)
                    return self._models[key]
            loaded = load(ref, trust_remote_code=self.trust_remote_code, **self._placing(ref))
            with self._lock:
                self._admit(loaded)
                self.load_count[key] = self.load_count.get(key, 0) + 1
            return loaded

    def max_memory(self) -> dict[int | str, int]:
        """accelerate's ``max_memory`` for ``device='auto'``: 90% of each visible GPU's free memory now
        (so models already there count), and the host budget left after the loaded models."""
        import torch

        budget: dict[int | str, int] = {i: int(torch.cuda.mem_get_info(i)[0] * 0.9)
                                        for i in range(torch.cuda.device_count())}
        if self.budget_bytes is not None:
            budget["cpu"] = max(0, self.budget_bytes - self.used_bytes())
        return budget

    def _placing(self, ref: ModelRef) -> dict[str, Any]:
        if ref.device != "auto":
            return {}
        offload = catalog.default_home() / "offload" / hashlib.sha256(cache_key(ref).encode()).hexdigest()[:16]
        return {"max_memory": self.max_memory() or None, "offload_dir": str(offload)}

    def _admit(self, loaded: LoadedModel) -> None:
        budget = self.budget_bytes
        if budget is not None:
            if loaded.nbytes > budget:
                raise OverBudget("model", f"{loaded.ref.model!r} needs {loaded.nbytes / 2**20:.1f} MiB, more than "
                                 f"the whole memory budget of {budget / 2**20:.1f} MiB",
                                 fix="raise NEUROTRACE_MEMORY_BUDGET / --memory-budget, or use a smaller dtype")
            while self._models and self.used_bytes() + loaded.nbytes > budget:
                victim = next((k for k in self._models if not self._leases.get(k)), None)
                if victim is None:
                    raise OverBudget("model", f"no room for {loaded.ref.model!r}: every loaded model is in use",
                                     fix="wait for running experiments to finish or raise the memory budget")
                self._drop(victim)
        self._models[loaded.key] = loaded

    def _drop(self, key: str) -> None:
        self._models.pop(key, None)
        gc.collect()

    # -- use -----------------------------------------------------------------------------------
    @contextmanager
    def lease(self, ref: ModelRef) -> Iterator[LoadedModel]:
        """Use a model exclusively for the block: loaded, locked and protected from eviction."""
        loaded = self.get(ref)
        with self._lock:
            self._leases[loaded.key] = self._leases.get(loaded.key, 0) + 1
        try:
            with loaded.lock:
                yield loaded
        finally:
            with self._lock:
                self._leases[loaded.key] -= 1

    def release(self, model: str) -> list[str]:
        """Unload every cached variant of ``model`` that is not in use; returns the released keys."""
        with self._lock:
            keys = [k for k, m in self._models.items() if m.ref.model == model or k == model]
            if not keys:
                raise NotFound("model", f"{model!r} is not loaded", fix="see list_models for what is loaded")
            busy = [k for k in keys if self._leases.get(k)]
            for k in keys:
                if k not in busy:
                    self._drop(k)
            return [k for k in keys if k not in busy]

    def used_bytes(self) -> int:
        return sum(m.nbytes for m in self._models.values())

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**m.info(), "in_use": bool(self._leases.get(k))} for k, m in self._models.items()]
