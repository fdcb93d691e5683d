"""Hooks that live only inside context managers.

One hook signature: ``fn(act, site=...) -> Tensor | None``. ``act`` is the activation at the site
(the first element when a module returns a tuple); returning a tensor replaces it, returning ``None``
keeps it (after any in-place edits). Hooks are always removed on exit, even on error, and a model's
lock must be held while they are attached (see :meth:`neurotrace.lab.model.weights.cache.ModelCache.lease`).

A backend that realises hooks itself (nnsight, :mod:`neurotrace.lab.model.runtime.nnsight_backend`) opens
:func:`routed` on the model: inside it, ``hooked`` adds its hooks to a registry instead of attaching
PyTorch hooks, and the backend's forward applies whatever the registry holds, so experiment code that
attaches hooks through ``hooked`` runs unchanged on either backend.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn

from neurotrace.lab.model.access.adapters import ArchAdapter

HookFn = Callable[..., Tensor | None]
Registry = dict[str, list[HookFn]]
# (id(model), registry) pairs whose hooks a backend realises itself (see routed)
_ROUTES: ContextVar[tuple[tuple[int, Registry], ...]] = ContextVar("neurotrace_routes", default=())


def _output_hook(fn: HookFn, site: str) -> Callable[[nn.Module, Any, Any], Any]:
    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            new = fn(output[0], site=site)
            return output if new is None else (new, *output[1:])
        new = fn(output, site=site)
        return output if new is None else new

    return hook


def _input_hook(fn: HookFn, site: str) -> Callable[[nn.Module, Any, Any], Any]:
    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if args:
            new = fn(args[0], site=site)
            return None if new is None else ((new, *args[1:]), kwargs)
        key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
        new = fn(kwargs[key], site=site)
        if new is None:
            return None
        return args, {**kwargs, key: new}

    return hook


@contextmanager
def hooked(model: nn.Module, adapter: ArchAdapter,
           hooks: Mapping[str, HookFn | Sequence[HookFn]]) -> Iterator[None]:
    """Attach ``hooks`` ({site: fn or [fn, ...]}) for the duration of the block."""
    registry = next((r for m, r in _ROUTES.get() if m == id(model)), None)
    if registry is not None:
        with _registered(registry, hooks):
            yield
        return
    handles = []
    try:
        for site, fns in hooks.items():
            module, mode = adapter.site(model, site)
            for fn in (fns if isinstance(fns, Sequence) else [fns]):
                if mode == "output":
                    handles.append(module.register_forward_hook(_output_hook(fn, site)))
                else:
                    handles.append(module.register_forward_pre_hook(_input_hook(fn, site), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def routed(model: nn.Module) -> Iterator[Registry]:
    """Inside the block, :func:`hooked` on ``model`` (in this context) fills the yielded registry
    ({site: [fn, ...]}, in attach order) instead of attaching PyTorch hooks."""
    registry: Registry = {}
    token = _ROUTES.set((*_ROUTES.get(), (id(model), registry)))
    try:
        yield registry
    finally:
        _ROUTES.reset(token)


@contextmanager
def _registered(registry: Registry, hooks: Mapping[str, HookFn | Sequence[HookFn]]) -> Iterator[None]:
    added = [(site, fn) for site, fns in hooks.items() for fn in (fns if isinstance(fns, Sequence) else [fns])]
    for site, fn in added:
        registry.setdefault(site, []).append(fn)
    try:
        yield
    finally:
        for site, fn in added:
            registry[site].remove(fn)
            if not registry[site]:
                del registry[site]


@contextmanager
def recording(model: nn.Module, adapter: ArchAdapter, sites: Sequence[str],
              detach: bool = True) -> Iterator[dict[str, Tensor]]:
    """Record the activation at each site into the yielded dict (overwritten on each forward)."""
    store: dict[str, Tensor] = {}

    def save(act: Tensor, site: str) -> None:
        store[site] = act.detach() if detach else act
        return None

    with hooked(model, adapter, {s: save for s in sites}):
        yield store


@torch.no_grad()
def run_with_cache(model: nn.Module, adapter: ArchAdapter, sites: Sequence[str],
                   **inputs: Tensor) -> tuple[Any, dict[str, Tensor]]:
    """One forward pass returning (model output, {site: activation})."""
    with recording(model, adapter, sites) as store:
        out = model(**inputs)
    return out, dict(store)
