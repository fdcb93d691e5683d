"""Which generation path a request allows: the KV cache where it is exact, recomputation otherwise.

On the KV-cache path (:mod:`neurotrace.lab.model.runtime.stepwise`) position ``q`` keeps the activations of the
forward where it was the newest token: forward 0 for prompt positions (``q < P``), forward
``q - P + 1`` for generated ones. Recomputation runs it again in every later forward. The two agree
when, for every position an edit touches, the edit is applied in all of those forwards or in none:

* every edit kind here is **position-wise** (zero, zero_heads, set_neurons, mean, patch, the SAE
  feature edits: what it writes at a position depends only on that position; knockout: what a query
  position may attend to), so an edit that acts at every step is exact on the cache;
* an edit limited to some ``steps`` is exact iff, for each position ``q`` it touches (its
  ``positions``; a knockout's ``query_positions``), its steps include all or none of the forwards
  from ``q``'s own one to the last. ``steps=[2]`` on every position is not: recomputation edits the
  prompt only in forward 2, the cache would keep forward 0's unedited prompt (or, with
  ``steps=[0]``, the edited one); those requests recompute every forward, and say why.

In capture, an edit's steps are *episode* steps: within one step every forward applies the same
edits, so a causal LM always takes the cache. Masked LMs recompute (they do not generate anyway).
Each run records the path and the reason (``generation`` in capture.json / report.json).
:func:`force_recompute` runs the reference path for tests and benches.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from neurotrace.lab.capture.edits import EDIT_KINDS, AttentionKnockout, resolve_positions

GenerationPath = Literal["kv_cache", "recompute", "single_forward"]
POSITIONWISE = frozenset(k.strip() for k in EDIT_KINDS.split(","))

_FORCED: ContextVar[bool] = ContextVar("neurotrace_force_recompute", default=False)


@contextmanager
def force_recompute() -> Iterator[None]:
    """Inside the block, capture and intervene recompute every forward (the reference path)."""
    token = _FORCED.set(True)
    try:
        yield
    finally:
        _FORCED.reset(token)


def _plan(path: GenerationPath, reason: str) -> dict[str, str]:
    return {"path": path, "reason": reason}


def _trivial(kind: str, n_forwards: int) -> dict[str, str] | None:
    if n_forwards <= 1:
        return _plan("single_forward", "nothing is generated after the prompt's forward")
    if kind != "causal":
        return _plan("recompute", "masked LM: bidirectional attention has no KV cache")
    if _FORCED.get():
        return _plan("recompute", "forced (force_recompute, the reference path)")
    return None


def plan_fixed_edits(kind: str, n_forwards: int, n_edits: int) -> dict[str, str]:
    """The path for forwards that all apply the same edits (a capture step)."""
    trivial = _trivial(kind, n_forwards)
    if trivial is not None:
        return trivial
    if not n_edits:
        return _plan("kv_cache", "no edits")
    return _plan("kv_cache", "every forward of the step applies the same position-wise edits")


def plan_step_edits(specs: Sequence[Any], prompt_len: int, n_forwards: int, kind: str, *, field: str,
                    positionwise: frozenset[str] = POSITIONWISE) -> dict[str, str]:
    """The path for edits scoped to generation steps (forward ``k`` = step ``k``), with the reason."""
    trivial = _trivial(kind, n_forwards)
    if trivial is not None:
        return trivial
    if not specs:
        return _plan("kv_cache", "no edits")
    for i, spec in enumerate(specs):
        if spec.kind not in positionwise:
            return _plan("recompute", f"{field}[{i}] ({spec.kind}) is not known to be position-wise")
        q = _conflict(spec, prompt_len, n_forwards)
        if q is not None:
            return _plan("recompute", f"{field}[{i}] ({spec.kind}) acts at steps {_short(spec.steps)} only and "
                         f"touches position {q}, which forward {_own_forward(q, prompt_len)} would put in the "
                         "cache for later forwards that treat it differently")
    if all(s.steps is None for s in specs):
        return _plan("kv_cache", "every edit is position-wise and acts at every step")
    return _plan("kv_cache", "every edit is position-wise, and the steps of each cover all or none of the "
                 "forwards that reuse the positions it touches")


def _own_forward(q: int, prompt_len: int) -> int:
    return 0 if q < prompt_len else q - prompt_len + 1


def _conflict(spec: Any, prompt_len: int, n: int) -> int | None:
    """A position the edit touches whose forwards (its own one to the last) it splits, or None."""
    if spec.steps is None:
        return None
    active = [spec.active(k) for k in range(n)]
    steady = [True] * n                                # steady[j]: active is constant over forwards j..n-1
    for j in range(n - 2, -1, -1):
        steady[j] = steady[j + 1] and active[j] == active[j + 1]
    last = prompt_len + n - 2                          # the newest position the last forward feeds
    touched = spec.query_positions if isinstance(spec, AttentionKnockout) else spec.positions
    positions = resolve_positions(touched, prompt_len, last + 1)
    for q in range(last + 1) if positions is None else positions:
        if not steady[_own_forward(q, prompt_len)]:
            return q
    return None


def _short(steps: Sequence[int] | None) -> str:
    items = sorted(steps or [])
    return str(items if len(items) <= 6 else [*items[:5], "..."])


def overall_plan(plans: Sequence[dict[str, str]], label: str) -> dict[str, str]:
    """One run-level plan from per-item plans: the first recomputation (with its ``label`` index), else
    the KV cache, else single forwards."""
    for want in ("recompute", "kv_cache", "single_forward"):
        for i, plan in enumerate(plans):
            if plan["path"] == want:
                reason = f"{label} {i}: {plan['reason']}" if want == "recompute" and len(plans) > 1 else plan["reason"]
                return _plan(plan["path"], reason)
    return _plan("single_forward", "nothing ran")
