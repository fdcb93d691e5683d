"""Whole-job estimates: forward rows and peak bytes of a request, read before any model work.

Each estimate reads only the request and the model's shape: the shape of a model already in the cache,
else its ``config.json`` when the name is an embedded model or a local directory, else :data:`GUESS` (a
mid-size model). Positions are bounded by the prompt's characters (a token covers at least one) and the
model's context. The bytes are a coarse upper bound on the activations alive at once (a batch of rows x
positions x the widths a block materialises, plus attention's positions x positions per head and the
logits it keeps) and on what the job accumulates (result grids, generated rows); the model's own weights
are the cache's budget, not the job's.

:func:`machine_flops` (this machine's matmul rate, timed once per process) and :func:`token_flops` (a model's
multiply-adds per token) give dry_run its seconds before a tool has run here (:mod:`neurotrace.tools._dryrun`).

Each request carries its own cost model, ``XRequest.cost(lab) -> Estimate``, beside the fields it reads (so
a renamed field fails in the budget tests); this module holds the shared units and helpers they use.
"""

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

BYTES = 4                   # float32
ROWS_PER_BATCH = 512        # the trace grid's batch of restored rows
PACK_FACTS_GUESS = 128      # facts of a pack or dataset run when max_facts is unset
WIDTH_GUESS = 4096          # d_model assumed where a request alone sizes the job (no model shape read)
VOCAB_GUESS = 65_536


@dataclass(frozen=True)
class Dims:
    """The model shape an estimate needs."""

    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    d_vocab: int
    max_positions: int


GUESS = Dims(n_layers=48, d_model=4096, d_mlp=16384, n_heads=32, d_vocab=65_536, max_positions=4096)


@dataclass(frozen=True)
class Estimate:
    """A job's size: forward rows (one sequence through the model each), peak bytes, fields that drive it."""

    rows: int
    bytes: int
    fields: tuple[str, ...]


def dims_of(lab: Any, model: str | None) -> Dims:
    """The shape of ``model`` from the lab's cache (loaded, or its config.json), else GUESS."""
    if not model:
        return GUESS
    cache = getattr(lab, "cache", None)
    info = cache.shape_of(model) if cache is not None and hasattr(cache, "shape_of") else None
    if not info:
        return GUESS
    get = lambda name: int(info.get(name) or getattr(GUESS, name))  # noqa: E731
    return Dims(n_layers=get("n_layers"), d_model=get("d_model"), d_mlp=int(info.get("d_mlp") or 4 * get("d_model")),
                n_heads=get("n_heads"), d_vocab=get("d_vocab"), max_positions=get("max_positions"))


def known_dims(lab: Any, model: str | None) -> Dims | None:
    """The real shape of ``model`` when the lab can read it without loading (loaded, embedded or a local
    config.json); None when only a guess is possible (then index checks wait for the model)."""
    cache = getattr(lab, "cache", None)
    if not model or cache is None or not hasattr(cache, "shape_of"):
        return None
    info = cache.shape_of(model)
    if not info or not all(info.get(k) for k in ("n_layers", "d_model", "n_heads")):
        return None
    return dims_of(lab, model)


def positions(dims: Dims, texts: Iterable[str], extra: int = 0) -> int:
    """Tokens of the longest text (at most its characters + BOS/EOS), plus ``extra``, within the context."""
    longest = max((len(t) for t in texts), default=16)
    return max(1, min(dims.max_positions, longest + 2 + extra))


def forward_bytes(dims: Dims, rows: int, pos: int, logit_positions: int = 1, value_bytes: int = BYTES) -> int:
    """Activations alive in one batched forward: per row and position the residual copies, the MLP's
    hidden layer and one layer's attention scores (``value_bytes`` each: 2 in bfloat16), plus the logits
    kept (float32, where softmax reads them)."""
    per_token = 4 * dims.d_model + dims.d_mlp + dims.n_heads * pos
    return rows * pos * per_token * value_bytes + rows * logit_positions * dims.d_vocab * BYTES


def weight_bytes(dims: Dims, value_bytes: int) -> int:
    """Bytes of a model's weights at ``value_bytes`` per value (embedding, attention, MLP; norms neglected):
    what a reduced-precision copy adds to the cache beside the float32 model (its exact unembedding keeps a
    second, low half of the unembedding's weights)."""
    per_layer = 4 * dims.d_model * dims.d_model + 3 * dims.d_model * dims.d_mlp
    head = dims.d_vocab * dims.d_model * (2 if value_bytes < 4 else 1)
    return (dims.n_layers * per_layer + head) * value_bytes


def prompt_texts(items: Iterable[Any]) -> list[str]:
    """The text of each prompt item (a string, chat messages, or an object with a ``prompt``)."""
    out = []
    for item in items:
        item = item if isinstance(item, str | list) else getattr(item, "prompt", "")
        out.append(item if isinstance(item, str) else " ".join(str(getattr(m, "content", m)) for m in item))
    return out


@runtime_checkable
class Costed(Protocol):
    """A request that carries its own cost model: ``cost(lab)`` reads only its own fields and the model's
    shape (:func:`dims_of`) and names, in ``Estimate.fields``, the fields that drive it."""

    def cost(self, lab: Any) -> Estimate: ...


def job_estimate(request: Any, lab: Any = None) -> Estimate:
    """The request's own estimate (:class:`Costed`), or nothing to bound for a request without one."""
    return request.cost(lab) if isinstance(request, Costed) else Estimate(rows=0, bytes=0, fields=())


_flops: list[float] = []
_flops_lock = threading.Lock()


def machine_flops() -> float:
    """This machine's float32 matmul rate (FLOP/s) at the lab's thread count, timed once per process."""
    with _flops_lock:
        if _flops:
            return _flops[0]
    a, b = torch.randn(256, 512), torch.randn(512, 512)
    a @ b                                                              # warm-up
    best = float("inf")
    for _ in range(5):                       # the fastest of five: a busy moment does not set the rate
        started = time.perf_counter()
        for _ in range(3):
            a @ b
        best = min(best, time.perf_counter() - started)
    rate = 3 * 2 * 256 * 512 * 512 / max(best, 1e-9)
    with _flops_lock:
        _flops[:] = [rate]
    return rate


def token_flops(d: Dims) -> float:
    """Multiply-adds x 2 of one token through a model of shape ``d``: attention and MLP weights per layer
    (gated MLPs: three matrices), and the unembedding."""
    return 2.0 * (d.n_layers * (4 * d.d_model ** 2 + 3 * d.d_model * d.d_mlp) + d.d_model * d.d_vocab)
