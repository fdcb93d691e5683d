"""The model cache: load once, share, evict under a memory budget.

* One load per key (model, kind, backend, dtype, device), even when many requests ask at once: the
  first caller loads while the others wait on that key's lock.
* A budget per device: host memory (``budget_bytes``, the server's ``NEUROTRACE_MEMORY_BUDGET``) and
  each GPU (``gpu_budget_bytes``, default 90% of its total memory). Each loaded model's bytes are
  accounted per device from its device map or its tensors (:mod:`~neurotrace.lab.model.weights.placement`;
  disk-offloaded weights count nowhere). A new model evicts least-recently-used models holding bytes on
  a device it needs; models in use (leased) are never evicted. A model larger than a device's whole
  budget, or one for which the models in use leave no room, is refused with :class:`OverBudget` naming
  the device and the fix.
* ``device='auto'`` loads get accelerate's ``max_memory`` from the same budgets (what is left on each GPU
  and the host), so accelerate places layers within them and offloads the rest to disk.
* ``lease(ref)`` is how experiments use a model: it loads (or reuses) it, holds the model's lock for
  the block (hooks are attached only under it) and keeps it from being evicted.
"""

import gc
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from neurotrace.lab.errors import LabError, NotFound
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.derived import base_model
from neurotrace.lab.model.weights.embedded import embedded_model_path
from neurotrace.lab.model.weights.gguf import find_gguf, read_header
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef, cache_key, load
from neurotrace.lab.model.weights.lora import split
from neurotrace.lab.model.weights.placement import (
    device_bytes,
    in_memory,
    layer_placement,
    plan_admission,
    used_by_device,
)


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


def parse_device_bytes(text: str | None) -> dict[str, int] | None:
    """'20GiB' (every GPU) -> {'cuda': ...}; 'cuda:0=20GiB,cuda:1=40GiB' -> per device; None/'' -> None."""
    if not text or not text.strip():
        return None
    out: dict[str, int] = {}
    for part in text.split(","):
        device, _, amount = part.strip().rpartition("=")
        out[device.strip() or "cuda"] = parse_bytes(amount) or 0
    return out


def gpu_budgets(configured: dict[str, int] | None) -> dict[str, int]:
    """{'cuda:N': bytes} for each visible GPU: the configured budget (per device, or 'cuda' for all), else
    90% of the GPU's total memory. Empty without CUDA."""
    out: dict[str, int] = {}
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        name = f"cuda:{i}"
        given = (configured or {}).get(name, (configured or {}).get("cuda"))
        out[name] = int(given) if given else int(torch.cuda.get_device_properties(i).total_memory * 0.9)
    return out


def config_shape(model: str) -> dict[str, int] | None:
    """The shape a model declares without loading it: an embedded model's or local directory's
    config.json, or a catalog model's / .gguf file's header; None elsewhere (a hub id). An edited model
    (``<model>@edit:<run_id>``) and a tuned pair (``base+adapter``) have their base's shape."""
    model = base_model(split(model)[0])
    if model in catalog.CATALOG or model.endswith(".gguf"):
        return gguf_shape(model)
    try:
        path = embedded_model_path(model) or Path(model).expanduser()
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    config = config.get("text_config") or config
    pick = lambda *names: next((int(config[n]) for n in names if isinstance(config.get(n), int)), 0)  # noqa: E731
    return {"n_layers": pick("n_layer", "num_hidden_layers"), "d_model": pick("n_embd", "hidden_size", "d_model"),
            "d_mlp": pick("n_inner", "intermediate_size"), "n_heads": pick("n_head", "num_attention_heads"),
            "d_vocab": pick("vocab_size"), "max_positions": pick("n_positions", "max_position_embeddings")}


def gguf_shape(model: str) -> dict[str, int] | None:
    """The shape in a GGUF header (catalog name or .gguf path; the header alone is read)."""
    try:
        metadata, _ = read_header(catalog.locate(model) if model in catalog.CATALOG else find_gguf(model))
    except (LabError, OSError, ValueError):
        return None
    arch = str(metadata.get("general.architecture", ""))
    get = lambda key: metadata.get(f"{arch}.{key}") if isinstance(metadata.get(f"{arch}.{key}"), int) else 0  # noqa: E731
    vocab = get("vocab_size") or metadata.get("tokenizer.ggml.tokens")   # an array's length
    return {"n_layers": get("block_count"), "d_model": get("embedding_length"), "d_mlp": get("feed_forward_length"),
            "n_heads": get("attention.head_count"), "d_vocab": int(vocab) if isinstance(vocab, int) else 0,
            "max_positions": get("context_length")}


class ModelCache:
    def __init__(self, budget_bytes: int | None = None, trust_remote_code: bool = False,
                 gpu_budget_bytes: dict[str, int] | None = None, runs_root: Path | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.runs_root = runs_root      # where edit runs keep the deltas of '<model>@edit:<run_id>' models
        self.trust_remote_code = trust_remote_code
        self.gpu_budget_bytes = gpu_budget_bytes
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._bytes: dict[str, dict[str, int]] = {}     # key -> {device: bytes}
        self._leases: dict[str, int] = {}
        self._key_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.load_count: dict[str, int] = {}

    # -- loading -----------------------------------------------------------------------------
    def get(self, ref: ModelRef) -> LoadedModel:
        """The loaded model for ``ref``, loading it once if needed."""
        return self._get_or_build(cache_key(ref), lambda: load(
            ref, trust_remote_code=self.trust_remote_code, runs_root=self.runs_root, **self._placing(ref)))

    def get_variant(self, ref: ModelRef, tag: str, make: Callable[[LoadedModel], LoadedModel]) -> LoadedModel:
        """A model derived from ``ref``'s load by ``make`` (e.g. a bfloat16 copy), cached under its own key
        ``<ref's key>|<tag>`` and counted in the budget like any load; made once, from the base model."""
        key = f"{cache_key(ref)}|{tag}"

        def build() -> LoadedModel:
            with self.lease(ref) as base:
                made = make(base)
            if made.key != key:
                raise ValueError(f"a variant must carry its key {key!r}, not {made.key!r}")
            return made
        return self._get_or_build(key, build)

    def _get_or_build(self, key: str, build: Callable[[], LoadedModel]) -> LoadedModel:
        """The cached model under ``key``, or ``build()`` run once (one builder per key at a time; the
        cache lock is not held while it runs) and admitted."""
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
            built = build()
            with self._lock:
                self._admit(built)
                self.load_count[key] = self.load_count.get(key, 0) + 1
            return built

    def budgets(self) -> dict[str, int | None]:
        """{device: bytes or None (no limit)}: the host ('cpu') and each visible GPU."""
        return {"cpu": self.budget_bytes, **gpu_budgets(self.gpu_budget_bytes)}

    def max_memory(self) -> dict[int | str, int]:
        """accelerate's ``max_memory`` for ``device='auto'``: per visible GPU, what its budget leaves after
        the loaded models, at most 90% of its free memory now; and the host budget left ('cpu')."""
        used = self.used_by_device()
        budget: dict[int | str, int] = {}
        for name, limit in gpu_budgets(self.gpu_budget_bytes).items():
            i = int(name.split(":")[1])
            budget[i] = max(0, min(int(torch.cuda.mem_get_info(i)[0] * 0.9), limit - used.get(name, 0)))
        if self.budget_bytes is not None:
            budget["cpu"] = max(0, self.budget_bytes - used.get("cpu", 0))
        return budget

    def _placing(self, ref: ModelRef) -> dict[str, Any]:
        if ref.device != "auto":
            return {}
        offload = catalog.default_home() / "offload" / hashlib.sha256(cache_key(ref).encode()).hexdigest()[:16]
        return {"max_memory": self.max_memory() or None, "offload_dir": str(offload)}

    def _admit(self, loaded: LoadedModel) -> None:
        per_device = device_bytes(loaded.model)
        loaded_bytes = OrderedDict((k, self._bytes.get(k, {})) for k in self._models)
        leased = {k for k, n in self._leases.items() if n}
        for victim in plan_admission(loaded.ref.model, per_device, loaded_bytes, leased, self.budgets()):
            self._drop(victim)
        self._models[loaded.key] = loaded
        self._bytes[loaded.key] = per_device

    def _drop(self, key: str) -> None:
        self._models.pop(key, None)
        self._bytes.pop(key, None)
        gc.collect()

    # -- use -----------------------------------------------------------------------------------
    @contextmanager
    def lease(self, ref: ModelRef) -> Iterator[LoadedModel]:
        """Use a model exclusively for the block: loaded, locked and protected from eviction."""
        with self._leased(self.get(ref)) as loaded:
            yield loaded

    @contextmanager
    def lease_variant(self, ref: ModelRef, tag: str, make: Callable[[LoadedModel], LoadedModel]
                      ) -> Iterator[LoadedModel]:
        """:meth:`lease` of the variant :meth:`get_variant` makes."""
        with self._leased(self.get_variant(ref, tag, make)) as loaded:
            yield loaded

    @contextmanager
    def _leased(self, loaded: LoadedModel) -> Iterator[LoadedModel]:
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
        """Bytes the loaded models hold in memory, every device together (disk offload excluded)."""
        return sum(in_memory(b) for b in self._bytes.values())

    def used_by_device(self) -> dict[str, int]:
        """{device: bytes} the loaded models hold ('disk': offloaded weights, in no memory)."""
        return used_by_device(self._bytes)

    def shape_of(self, model: str) -> dict[str, Any] | None:
        """The shape (n_layers, d_model, d_mlp, n_heads, d_vocab, max_positions) of ``model`` without loading
        it: a loaded variant's, else read from config.json for an embedded model or a local directory."""
        with self._lock:
            found = next((m for m in self._models.values() if m.ref.model == model), None)
        return found.info() if found is not None else config_shape(model)

    def placement_of(self, m: LoadedModel) -> dict[str, Any]:
        """Where a loaded model's layers live ({device: '0-5,8'}) and its bytes per device."""
        per_device = self._bytes.get(m.key)
        return {"layers": layer_placement(m.model, m.adapter.blocks, m.n_layers),
                "device_bytes": dict(per_device if per_device is not None else device_bytes(m.model))}

    def listing(self) -> list[dict[str, Any]]:
        """Each loaded model's description with :meth:`placement_of`; the full module map of a
        device-mapped model is in load_model's reply."""
        with self._lock:
            return [{**{f: v for f, v in m.info().items() if f != "device_map"}, **self.placement_of(m),
                     "in_use": bool(self._leases.get(k))} for k, m in self._models.items()]
