"""The nnsight backend: the same site hooks, realised inside nnsight's tracing context.

An experiment expresses its interventions once, as site hooks ``fn(act, site=...) -> Tensor | None``
(see :mod:`neurotrace.lab.model.access.hooks`). With ``backend='hf'`` they become PyTorch forward hooks;
with ``backend='nnsight'`` they run inside ``lm.nnsight.trace(...)``: each site's envoy ``.output``
(or ``.input`` for resid_pre, mlp.hook_post and attn.hook_z, the same table as the adapter's) is read,
handed to the hooks, and the hooks' result assigned back.

* :func:`traced_probs` saves only the scored position's p(target), so a remote run fetches one number
  per row, not a cache; :func:`traced_states` the clean states a grid restores.
* :func:`traced_output` is one forward with any inputs (attention mask, position ids, KV cache) that
  returns the model's (or its base model's) output; :func:`routed_forward` gives generation loops a
  forward that realises whatever :func:`neurotrace.lab.model.access.hooks.hooked` attached (the hooks go to
  a registry, see :func:`neurotrace.lab.model.access.hooks.routed`), so capture, intervene and clamp_sweep
  run unchanged.
* :func:`traced_gradients` reads activations and the gradient of p(target) in one forward and
  backward inside the trace (attribution patching).

nnsight interleaves the traced block with the forward, so sites must be visited in execution order:
:func:`plan` sorts them (embedding, then per layer resid_pre < attn.hook_z < attn_out < mlp.hook_post
< mlp_out < resid_post). Remote execution (NDIF) lives in :mod:`neurotrace.lab.model.runtime.ndif`; it
installs an nnsight backend for the traces of a run with :func:`use_backend`.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.adapters import SITE_RE
from neurotrace.lab.model.access.hooks import HookFn, routed

_ORDER = {"hook_resid_pre": 0, "attn.hook_z": 1, "hook_attn_out": 2, "mlp.hook_post": 3, "hook_mlp_out": 4,
          "hook_resid_post": 5}  # execution order within a block
HookMap = Mapping[str, HookFn | Sequence[HookFn]]
# lm -> the nnsight backend its traces run on (None: local execution); set by use_backend
_BACKEND: ContextVar[Callable[[Any], Any] | None] = ContextVar("neurotrace_nnsight_backend", default=None)


def traced(lm: Any) -> bool:
    """Whether ``lm``'s forwards run through nnsight: the one test every experiment makes (the model was
    loaded with ``backend='nnsight'``, so it carries nnsight's wrapper)."""
    return getattr(lm, "nnsight", None) is not None


@dataclass(frozen=True)
class Step:
    """One site visited in the traced block: its envoy, 'output' or 'input', and its hooks in order."""

    site: str
    envoy: Any
    mode: str
    fns: tuple[HookFn, ...]


@contextmanager
def use_backend(backend_for: Callable[[Any], Any]) -> Iterator[None]:
    """Inside the block, every trace of this module runs on ``backend_for(lm)`` (e.g. NDIF's)."""
    token = _BACKEND.set(backend_for)
    try:
        yield
    finally:
        _BACKEND.reset(token)


def current_backend(lm: Any) -> Any:
    """The nnsight backend a trace of ``lm`` runs on now (None: local execution)."""
    backend_for = _BACKEND.get()
    return None if backend_for is None else backend_for(lm)


def input_device(lm: Any) -> torch.device:
    """Where inputs go: the model's device, or the CPU for a meta model (weights only on the server)."""
    device = lm.device
    return torch.device("cpu") if device.type == "meta" else device


def _envoy(root: Any, path: str) -> Any:
    """The envoy of the submodule at ``path``; a child whose name nnsight serves on every envoy (BERT's
    ``attention.output``) is nnsight's ``E_<name>``."""
    env = root
    for part in path.split("."):
        if part.isdigit():
            env = env[int(part)]
        else:
            env = getattr(env, f"E_{part}" if hasattr(type(env), part) else part)
    return env


def _rank(site: str) -> tuple[int, int]:
    if site == "hook_embed":
        return (-1, 0)
    m = SITE_RE.match(site)
    if not m:
        return (10**9, 0)  # adapter.site below raises the InputError naming it
    return (int(m.group(1)), _ORDER[m.group(2)])


def plan(lm: Any, hooks: HookMap) -> list[Step]:
    """The sites of ``hooks`` as envoys, in execution order (what nnsight's interleaving requires)."""
    names = {id(mod): name for name, mod in lm.model.named_modules()}
    steps = []
    for site in sorted(hooks, key=_rank):
        module, mode = lm.adapter.site(lm.model, site)
        fns = hooks[site]
        steps.append(Step(site, _envoy(lm.nnsight, names[id(module)]), mode,
                          tuple(_shippable(f) for f in (fns if isinstance(fns, Sequence) else [fns]))))
    return steps


def _shippable(fn: HookFn) -> HookFn:
    """The hook itself, not a shape-checking wrapper around it: nnsight ships a function by its source and
    closure, and a wrapper's source (that of the wrapped function) does not match its closure. Only
    jaxtyping's wrappers (the test suite's runtime shape checks) are taken off."""
    code = getattr(fn, "__code__", None)
    if code is not None and "jaxtyping" in code.co_filename and hasattr(fn, "__wrapped__"):
        return fn.__wrapped__
    return fn


def apply_step(step: Step) -> None:
    """Inside a trace: read the site's value, run its hooks, write the result back."""
    value = step.envoy.output if step.mode == "output" else step.envoy.input
    act = value[0] if isinstance(value, tuple) else value
    changed = False
    for fn in step.fns:
        new = fn(act, site=step.site)
        if new is not None:
            act, changed = new, True
    if not changed:
        return
    new_value = (act, *value[1:]) if isinstance(value, tuple) else act
    if step.mode == "output":
        step.envoy.output = new_value
    else:
        step.envoy.input = new_value


def require(lm: Any) -> Any:
    if not traced(lm):
        raise InputError("backend", "this model was not loaded with the nnsight backend",
                         fix="load it with backend='nnsight'")
    return lm.nnsight


@torch.no_grad()
def traced_probs(lm: Any, ids: Tensor, predict_pos: int, target_id: int, hooks: HookMap | None = None,
                 *, backend: Any = None) -> Tensor:
    """p(target) at ``predict_pos`` per row of ``ids`` (batch, pos) with ``hooks`` realised by nnsight.

    ``backend`` is an nnsight backend (``None``: local execution; see :func:`remote_backend`)."""
    wrapper = require(lm)
    steps = plan(lm, hooks or {})
    backend = current_backend(lm) if backend is None else backend
    keep, at = scored_logits(lm, predict_pos)
    with wrapper.trace(input_ids=ids.to(input_device(lm)), backend=backend, **keep):
        for step in steps:
            apply_step(step)
        # clone: a view would pickle (and fetch) the whole (rows, vocab) storage
        probs = torch.softmax(wrapper.output.logits[:, at].float(), dim=-1)[:, target_id].clone().save()
    return probs


def scored_logits(lm: Any, predict_pos: int) -> tuple[dict[str, Any], int]:
    """(model kwargs, index into the logits) computing the unembedding at the scored position only: a
    causal LM's ``logits_to_keep`` (the same matmul as the hf path's head on one position, and no
    (rows, pos, vocab) tensor on the server); a masked LM computes every position."""
    if lm.lm_kind != "causal":
        return {}, predict_pos
    return {"logits_to_keep": torch.tensor([predict_pos])}, 0


@torch.no_grad()
def traced_prediction(lm: Any, ids: Tensor, predict_pos: int, target_id: int) -> tuple[float, int]:
    """(p(target), top token id) at ``predict_pos`` of one prompt ``ids`` (pos,), read through nnsight."""
    wrapper = require(lm)
    keep, at = scored_logits(lm, predict_pos)
    with wrapper.trace(input_ids=ids[None].to(input_device(lm)), backend=current_backend(lm), **keep):
        logits = wrapper.output.logits[0, at].float()
        p = torch.softmax(logits, dim=-1)[target_id].clone().save()
        top = logits.argmax().save()
    return float(p), int(top)


@torch.no_grad()
def traced_states(lm: Any, ids: Tensor, sites: Sequence[str]) -> dict[str, Tensor]:
    """The activation at each site for one prompt ``ids`` (pos,), as (pos, width), read through nnsight."""
    return traced_clean(lm, ids, sites, hidden=False)[0]


@torch.no_grad()
def traced_clean(lm: Any, ids: Tensor, sites: Sequence[str], *, hidden: bool = True
                 ) -> tuple[dict[str, Tensor], Tensor | None]:
    """:func:`traced_states` and (``hidden``) the base model's final hidden states (pos, d_model)."""
    store: dict[str, Tensor] = {}

    def save(act: Tensor, site: str) -> None:
        store[site] = act[0].detach().clone()

    wrapper = require(lm)
    steps = plan(lm, {s: save for s in sites})
    body, final = _envoy(wrapper, _base_path(lm)), None
    with wrapper.trace(input_ids=ids[None].to(input_device(lm)), backend=current_backend(lm)):
        for step in steps:
            apply_step(step)
        saved = nnsight_save(store)
        if hidden:
            final = body.output[0][0].clone().save()
    return dict(saved), final


def nnsight_save(value: Any) -> Any:
    """nnsight's ``save``: mark ``value`` to come back from the trace (what a remote run fetches)."""
    from nnsight import save

    return save(value)


def _base_path(lm: Any) -> str:
    base = lm.adapter.module(lm.model, lm.adapter.base)
    return next(name for name, mod in lm.model.named_modules() if mod is base)


@torch.no_grad()
def traced_output(lm: Any, hooks: HookMap | None = None, *, base: bool = False, **inputs: Any) -> Any:
    """One forward of ``lm`` on ``inputs`` (input_ids, attention_mask, position_ids, cache, ...) with
    ``hooks`` realised by nnsight: the model's output (logits, cache), or the base model's
    (last_hidden_state, cache) when ``base``."""
    wrapper = require(lm)
    steps = plan(lm, hooks or {})
    target = _envoy(wrapper, _base_path(lm)) if base else wrapper
    device = input_device(lm)
    moved = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in inputs.items()}
    with wrapper.trace(**moved, backend=current_backend(lm)):
        for step in steps:
            apply_step(step)
        out = target.output.save()
    return out


Forward = Callable[..., Any]  # forward(base=False, **inputs) -> model output, hooks realised


@contextmanager
def routed_forward(lm: Any) -> Iterator[Forward | None]:
    """For an nnsight-loaded ``lm``: a forward that realises every hook :func:`hooked` attaches to it
    inside the block (they go to a registry, not to PyTorch); ``None`` for other backends."""
    if not traced(lm):
        yield None
        return
    with routed(lm.model) as registry:
        yield lambda base=False, **inputs: traced_output(lm, registry, base=base, **inputs)


def traced_gradients(lm: Any, ids: Tensor, predict_pos: int, target_id: int, sites: Sequence[str],
                     hooks: HookMap) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """({site: activation}, {site: d sum_rows p(target) / d activation}) for ``ids`` (rows, pos) with
    ``hooks`` applied (one must make the input require grad, e.g. the embedding's), from one forward
    and one backward inside nnsight's trace. ``sites`` must not also be in ``hooks``."""
    acts: dict[str, Tensor] = {}

    def record(act: Tensor, site: str) -> None:
        acts[site] = act

    wrapper = require(lm)
    steps = plan(lm, {**hooks, **{s: record for s in sites}})
    backward_order = [s for s in reversed([step.site for step in steps]) if s in set(sites)]
    keep, at = scored_logits(lm, predict_pos)
    with torch.enable_grad(), wrapper.trace(input_ids=ids.to(input_device(lm)), backend=current_backend(lm), **keep):
        for step in steps:
            apply_step(step)
        p = torch.softmax(wrapper.output.logits[:, at].float(), dim=-1)[:, target_id].sum()
        grads = {}
        with p.backward():
            for site in backward_order:  # gradients arrive in reverse forward order
                grads[site] = acts[site].grad
        saved_acts = nnsight_save({s: a.detach() for s, a in acts.items()})
        saved_grads = nnsight_save(grads)
    return dict(saved_acts), dict(saved_grads)


