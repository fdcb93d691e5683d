"""The nnsight backend: the same site hooks, realised inside nnsight's tracing context.

An experiment expresses its interventions once, as site hooks ``fn(act, site=...) -> Tensor | None``
(see :mod:`neurotrace.lab.model.hooks`). With ``backend='hf'`` they become PyTorch forward hooks;
with ``backend='nnsight'`` :func:`traced_probs` runs them inside ``lm.nnsight.trace(...)``: each
site's envoy ``.output`` (or ``.input`` for resid_pre, mlp.hook_post and attn.hook_z, the same table
as the adapter's) is read, handed to the hooks, and the hooks' result assigned back. Only the
scored position's p(target) is saved, so a remote run fetches one number per row, not a cache.

nnsight interleaves the traced block with the forward, so sites must be visited in execution order:
:func:`plan` sorts them (embedding, then per layer resid_pre < attn.hook_z < attn_out < mlp.hook_post
< mlp_out < resid_post).

Remote execution (NDIF): the endpoint comes from ``NEUROTRACE_NDIF_URL`` and the key from
``NDIF_API_KEY`` (server configuration, never a request field; see :func:`ndif_config`).
:func:`build_remote_request` builds the exact envelope and payload nnsight would send, without
sending it; :func:`traced_probs` with ``remote=True`` sends it.
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.adapters import SITE_RE
from neurotrace.lab.model.hooks import HookFn

NDIF_URL_ENV = "NEUROTRACE_NDIF_URL"
NDIF_KEY_ENV = "NDIF_API_KEY"
DEFAULT_NDIF_URL = "https://api.ndif.us"
_ORDER = {"hook_resid_pre": 0, "attn.hook_z": 1, "hook_attn_out": 2, "mlp.hook_post": 3, "hook_mlp_out": 4,
          "hook_resid_post": 5}  # execution order within a block
HookMap = Mapping[str, HookFn | Sequence[HookFn]]


def wrap(model: nn.Module, tokenizer: Any, kind: str) -> Any:
    """The nnsight wrapper around an already loaded transformers model (local execution)."""
    from nnsight.modeling.transformers import TransformersModel

    task = "fill-mask" if kind == "masked" else "text-generation"
    return TransformersModel(model, tokenizer=tokenizer, task=task)


@dataclass(frozen=True)
class Step:
    """One site visited in the traced block: its envoy, 'output' or 'input', and its hooks in order."""

    site: str
    envoy: Any
    mode: str
    fns: tuple[HookFn, ...]


def _envoy(root: Any, path: str) -> Any:
    env = root
    for part in path.split("."):
        env = env[int(part)] if part.isdigit() else getattr(env, part)
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
                          tuple(fns if isinstance(fns, Sequence) else [fns])))
    return steps


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
    if getattr(lm, "nnsight", None) is None:
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
    with wrapper.trace(input_ids=ids.to(lm.device), backend=backend):
        for step in steps:
            apply_step(step)
        probs = torch.softmax(wrapper.output.logits[:, predict_pos].float(), dim=-1)[:, target_id].save()
    return probs


@torch.no_grad()
def traced_states(lm: Any, ids: Tensor, sites: Sequence[str]) -> dict[str, Tensor]:
    """The activation at each site for one prompt ``ids`` (pos,), as (pos, width), read through nnsight."""
    store: dict[str, Tensor] = {}

    def save(act: Tensor, site: str) -> None:
        store[site] = act[0].detach().clone()

    wrapper = require(lm)
    steps = plan(lm, {s: save for s in sites})
    with wrapper.trace(input_ids=ids[None].to(lm.device)):
        for step in steps:
            apply_step(step)
    return store


# -- remote execution (NDIF) ------------------------------------------------------------------

@dataclass(frozen=True)
class NdifConfig:
    """Where NDIF is and the key to use: server configuration only, read from the environment."""

    url: str
    api_key: str | None

    def __repr__(self) -> str:  # never print the key
        return f"NdifConfig(url={self.url!r}, api_key={'set' if self.api_key else 'unset'})"


def ndif_config(environ: Mapping[str, str] | None = None) -> NdifConfig:
    env = os.environ if environ is None else environ
    url = env.get(NDIF_URL_ENV) or DEFAULT_NDIF_URL
    if not url.startswith(("http://", "https://")):
        raise InputError("remote", f"{NDIF_URL_ENV} must start with http:// or https://",
                         fix=f"set {NDIF_URL_ENV} to the NDIF endpoint, e.g. {DEFAULT_NDIF_URL}")
    return NdifConfig(url=url, api_key=env.get(NDIF_KEY_ENV) or None)


def model_key(lm: Any, repo_id: str | None = None) -> str:
    """nnsight's key naming ``lm`` on NDIF: the hub id (``repo_id``, default the model's source) in
    nnsight's own format. NDIF hosts hub models only, so a local directory needs ``repo_id``; the id is
    taken as canonical (no hub call), as the hub would return it for a canonical spelling."""
    from nnsight.modeling import huggingface

    wrapper = require(lm)
    repo = repo_id or lm.source
    if repo.startswith((".", "/", "~")) or repo.count("/") != 1:
        raise InputError("remote", f"remote execution needs a HuggingFace hub id that NDIF hosts, not {repo!r}",
                         fix="load the model by its hub id, e.g. 'meta-llama/Llama-3.1-70B'")
    huggingface._ID_CACHE.setdefault(repo, repo)
    saved, wrapper.repo_id = wrapper.repo_id, repo
    try:
        return wrapper.to_model_key()
    finally:
        wrapper.repo_id = saved


def remote_backend(lm: Any, config: NdifConfig, *, blocking: bool = True, job_id: str | None = None,
                   repo_id: str | None = None) -> Any:
    """nnsight's RemoteBackend for ``lm`` on ``config``'s server (``blocking=False``: submit, then poll)."""
    from nnsight.intervention.backends.remote import RemoteBackend

    if not config.api_key:
        raise InputError("remote", f"remote execution needs an NDIF API key in {NDIF_KEY_ENV}",
                         fix=f"set {NDIF_KEY_ENV} in the server's environment (never in a request)")
    return RemoteBackend(model_key(lm, repo_id), host=config.url, api_key=config.api_key, blocking=blocking,
                         job_id=job_id)


class _Capture:
    """An nnsight backend that serialises the request exactly as RemoteBackend would, and sends nothing."""

    def __init__(self, key: str) -> None:
        self.model_key = key
        self.envelope: str | None = None
        self.payload: bytes | None = None

    def __call__(self, tracer: Any) -> None:
        from nnsight.intervention.backends.remote import RemoteBackend
        from nnsight.schema.request import RequestModel

        remote = RemoteBackend(self.model_key, host=DEFAULT_NDIF_URL)
        self.envelope = RequestModel(model_key=self.model_key, compress=remote.compress).metadata()
        self.payload = remote._serialize(tracer)


def build_remote_request(lm: Any, ids: Tensor, predict_pos: int, target_id: int, hooks: HookMap | None = None,
                         *, repo_id: str | None = None) -> tuple[str, bytes]:
    """The (JSON envelope, payload bytes) that a remote :func:`traced_probs` would POST to NDIF."""
    capture = _Capture(model_key(lm, repo_id))
    try:
        traced_probs(lm, ids, predict_pos, target_id, hooks, backend=capture)
    except Exception:  # noqa: BLE001 - nothing ran, so the saved value is missing; the request is what we want
        if capture.payload is None:
            raise
    if capture.envelope is None or capture.payload is None:
        raise RuntimeError("nnsight did not hand the trace to its backend")
    return capture.envelope, capture.payload
