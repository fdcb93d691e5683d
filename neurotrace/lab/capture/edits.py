"""Component edits: the one union shared by capture (episode steps) and intervene (generation steps).

Each edit names the ``steps`` it applies to (``None`` = every step; for capture an episode step, for
intervene a generation step, 0 = the forward over the prompt) and the token ``positions`` it touches
(``None`` = every position; a negative index counts back from the end of the step's prompt, so ``-1`` is
the last prompt token). Position ``p`` always means token ``p`` of the sequence: on the KV-cache path
(:mod:`neurotrace.lab.capture.generation`) a forward feeds only the newest token, and
:attr:`StepInfo.start` tells the hooks its absolute position. Every edit is position-wise (what it
does at a position depends only on that position's activation and the edit), which is what lets
both tools use the cache.

* ``zero``: set the activation at ``site`` to 0 at the positions. Zeroing ``hook_attn_out`` and
  ``hook_mlp_out`` of a layer at every position removes that layer's contribution to the residual.
* ``zero_heads``: set the chosen heads' outputs to 0 before the attention output projection
  (``blocks.{L}.attn.hook_z``, see :mod:`neurotrace.lab.model.access.sites`).
* ``set_neurons``: MLP neurons ``"L:i"`` (``blocks.{L}.mlp.hook_post``) set to ``value`` (0 = ablation).
* ``mean``: replace the activation with its mean over every row of a capture run (``capture_run_id``).
* ``patch``: replace the activation with a source's activation at the same site and position: the
  clean forward over another text (``source``), or the states a capture run recorded (``capture_run_id``
  with ``source_step``; that run must have captured ``positions='all'``).
* ``knockout``: query positions ``query_positions`` may not attend to key positions
  ``key_positions`` in the chosen layers. The attention module's ``attention_mask`` keyword is
  rewritten into an additive float mask (the causal pattern or the model's own mask, plus
  ``finfo.min`` at the knocked-out (query, key) pairs), which both the eager and the SDPA attention
  paths of transformers accept; flash-attention kernels do not, so load such models with the default.
"""

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.access.neurons import NEURON_HELP, parse_neurons
from neurotrace.lab.model.access.sites import attn_module, check_site
from neurotrace.lab.model.weights.loading import LoadedModel

Steps = Annotated[list[Annotated[int, Field(ge=0)]] | None,
                  Field(description="Steps where this applies (capture: episode step; intervene: generation "
                                    "step, 0 = the forward over the prompt); null = every step.")]
Positions = Annotated[list[int] | None,
                      Field(description="Token positions of the step's input; negative counts from the end "
                                        "of the step's prompt (-1 = last prompt token); null = all positions.")]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: Steps = None

    def active(self, step: int) -> bool:
        return self.steps is None or step in self.steps


class ZeroAblation(_Spec):
    kind: Literal["zero"] = "zero"
    site: str = Field(description="Site to zero, e.g. 'blocks.1.hook_mlp_out'.")
    positions: Positions = None


class HeadAblation(_Spec):
    kind: Literal["zero_heads"] = "zero_heads"
    layer: int = Field(ge=0, description="Attention layer.")
    heads: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, description="Heads to zero (0-based).")
    positions: Positions = None


class SetNeurons(_Spec):
    kind: Literal["set_neurons"] = "set_neurons"
    neurons: list[str] = Field(min_length=1, description=NEURON_HELP)
    value: float = Field(0.0, description="Value the neurons are set to (0 = zero ablation).")
    positions: Positions = None


class MeanAblation(_Spec):
    kind: Literal["mean"] = "mean"
    site: str = Field(description="Site to replace by its mean over a capture run.")
    capture_run_id: str = Field(description="A capture run that recorded `site`; its mean over all rows is used.")
    positions: Positions = None


class PatchActivations(_Spec):
    kind: Literal["patch"] = "patch"
    site: str = Field(description="Site to patch, e.g. 'blocks.1.hook_resid_pre'.")
    source: str | None = Field(None, min_length=1, description="Another text: its clean activation at the same "
                               "positions is patched in (positions past its end are left alone).")
    capture_run_id: str | None = Field(None, description="Or a capture run that recorded `site` with "
                                       "positions='all': its states of `source_step` are patched in.")
    source_step: int | None = Field(None, ge=0, description="The capture run's step to read; null = the same "
                                    "step index (capture) or the prompt's index (intervene).")
    positions: Positions = None

    @model_validator(mode="after")
    def _one_source(self) -> "PatchActivations":
        if (self.source is None) == (self.capture_run_id is None):
            raise ValueError("give exactly one of `source` (a text) and `capture_run_id` (a capture run)")
        return self


class AttentionKnockout(_Spec):
    kind: Literal["knockout"] = "knockout"
    layers: list[Annotated[int, Field(ge=0)]] | None = Field(None, description="Layers; null = every layer.")
    query_positions: list[int] = Field(min_length=1, description="Positions that may no longer attend ...")
    key_positions: list[int] = Field(min_length=1, description="... to these positions.")


ComponentEdit = Annotated[ZeroAblation | HeadAblation | SetNeurons | MeanAblation | PatchActivations
                          | AttentionKnockout, Field(discriminator="kind")]
COMPONENT_EDITS = (ZeroAblation, HeadAblation, SetNeurons, MeanAblation, PatchActivations, AttentionKnockout)
EDIT_KINDS = "zero, zero_heads, set_neurons, mean, patch, knockout"

StateLoader = Callable[[str, str], tuple[np.ndarray, list[dict]]]    # (capture run, site) -> (states, steps)
TextActs = Callable[[str, str], Tensor]                              # (site, text) -> clean (pos, width)


@dataclass
class StepInfo:
    """What a hook needs to know about the running step, and where sources come from."""

    step: int
    prompt_len: int
    source_step: int | None = None          # default step of a capture-run patch (None = ``step``)
    start: int = 0                          # absolute position of the forward's first fed token (KV cache)


def resolve_positions(positions: Sequence[int] | None, prompt_len: int, seq_len: int) -> list[int] | None:
    """Absolute positions < seq_len (negative ones from the end of the prompt); None = all."""
    if positions is None:
        return None
    out = [p if p >= 0 else prompt_len + p for p in positions]
    return sorted({p for p in out if 0 <= p < seq_len})


def fed_positions(positions: Sequence[int] | None, info: StepInfo, n_fed: int) -> list[int]:
    """The chosen positions among the ``n_fed`` tokens a forward feeds from ``info.start``, as indices
    into its activation (absolute position = index + ``info.start``)."""
    pos = resolve_positions(positions, info.prompt_len, info.start + n_fed)
    return list(range(n_fed)) if pos is None else [p - info.start for p in pos if p >= info.start]


def _select(act: Tensor, positions: Sequence[int] | None, info: StepInfo) -> Any:
    if positions is None:
        return slice(None)
    return torch.tensor(fed_positions(positions, info, act.shape[1]), dtype=torch.long, device=act.device)


def validate(specs: Sequence[Any], lm: LoadedModel, sites_of: Callable[[str], dict[str, Any]],
             field: str = "interventions") -> None:
    """Raise InputError(field) for component edits that do not fit the model or their source runs."""
    for i, spec in enumerate(specs):
        if isinstance(spec, ZeroAblation | MeanAblation | PatchActivations):
            check_site(spec.site, lm, field=field)
        if isinstance(spec, HeadAblation):
            if spec.layer >= lm.n_layers or max(spec.heads) >= lm.n_heads:
                raise InputError(field, f"{field}[{i}]: layer {spec.layer} / heads {spec.heads} out "
                                 f"of range ({lm.n_layers} layers, {lm.n_heads} heads)",
                                 fix="use valid layer and head indices")
        if isinstance(spec, SetNeurons):
            parse_neurons(spec.neurons, lm.n_layers, lm.d_mlp, field=field)
        if isinstance(spec, AttentionKnockout) and spec.layers and max(spec.layers) >= lm.n_layers:
            raise InputError(field, f"{field}[{i}]: knockout layer out of range ({lm.n_layers} layers)",
                             fix=f"use layers in 0..{lm.n_layers - 1}")
        run = getattr(spec, "capture_run_id", None)
        if run is not None and spec.site not in sites_of(run):
            raise InputError(field, f"{field}[{i}]: run {run} did not capture {spec.site}",
                             fix="capture that site in that run first")


def clean_text_acts(lm: LoadedModel) -> TextActs:
    """(site, text) -> the clean activation (pos, width) of one unedited forward over ``text`` (cached)."""
    cache: dict[tuple[str, str], Tensor] = {}

    def acts(site: str, text: str) -> Tensor:
        if (site, text) not in cache:
            seen: dict[str, Tensor] = {}

            def rec(act: Tensor, site: str) -> None:
                seen["h"] = act.detach()[0]

            ids = torch.tensor([lm.tokenizer(text).input_ids], device=lm.device)
            with torch.no_grad(), hooked(lm.model, lm.adapter, {site: rec}):
                lm.model(input_ids=ids, attention_mask=torch.ones_like(ids))
            cache[(site, text)] = seen["h"]
        return cache[(site, text)]
    return acts


def _zero_hook(spec: ZeroAblation, info: StepInfo) -> Callable[..., Tensor]:
    def fn(act: Tensor, site: str) -> Tensor:
        out = act.clone()
        out[:, _select(act, spec.positions, info)] = 0
        return out
    return fn


def _heads_hook(spec: HeadAblation, info: StepInfo, heads_total: int) -> Callable[..., Tensor]:
    def fn(z: Tensor, site: str) -> Tensor:
        b, s, width = z.shape
        out = z.clone().view(b, s, heads_total, width // heads_total)          # (batch, pos, head, d_head)
        sel = _select(z, spec.positions, info)
        idx = torch.tensor(spec.heads, dtype=torch.long, device=z.device)
        view = out[:, sel]
        view[:, :, idx] = 0
        out[:, sel] = view
        return out.view(b, s, width)
    return fn


def _replace_hook(values: Callable[[Tensor], Tensor], positions: Sequence[int] | None,
                  info: StepInfo) -> Callable[..., Tensor]:
    def fn(act: Tensor, site: str) -> Tensor:
        out = act.clone()
        pos = fed_positions(positions, info, act.shape[1])
        src = values(act)                                                        # (src_pos, d) or (d,)
        if src.dim() == 1:
            out[:, pos] = src.to(act.dtype)
        else:
            pos = [p for p in pos if p + info.start < src.shape[0]]
            out[:, pos] = src[[p + info.start for p in pos]].to(act.dtype)
        return out
    return fn


def _neurons_hook(positions: Sequence[int] | None, idx: list[int], value: float,
                  info: StepInfo) -> Callable[..., Tensor]:
    def fn(act: Tensor, site: str) -> Tensor:
        out = act.clone()
        pos = _select(act, positions, info)
        sel = out[:, pos]
        sel[..., idx] = value
        out[:, pos] = sel
        return out
    return fn


def step_hooks(specs: Sequence[Any], info: StepInfo, lm: LoadedModel, load_states: StateLoader,
               text_acts: TextActs | None = None) -> dict[str, list[Callable]]:
    """{site: [hook fns]} for the component edits active at ``info.step`` (knockouts: see :func:`knockout`;
    other specs are skipped, so intervene can pass its whole policy list)."""
    hooks: dict[str, list[Callable]] = {}
    for spec in specs:
        if not isinstance(spec, COMPONENT_EDITS) or not spec.active(info.step):
            continue
        if isinstance(spec, ZeroAblation):
            hooks.setdefault(spec.site, []).append(_zero_hook(spec, info))
        elif isinstance(spec, HeadAblation):
            hooks.setdefault(f"blocks.{spec.layer}.attn.hook_z", []).append(_heads_hook(spec, info, lm.n_heads))
        elif isinstance(spec, SetNeurons):
            for layer, idx in parse_neurons(spec.neurons, lm.n_layers, lm.d_mlp).items():
                hooks.setdefault(f"blocks.{layer}.mlp.hook_post", []).append(
                    _neurons_hook(spec.positions, list(idx), spec.value, info))
        elif isinstance(spec, MeanAblation):
            states, _ = load_states(spec.capture_run_id, spec.site)
            mean = torch.from_numpy(_mean_of(states)).float().to(lm.device)
            hooks.setdefault(spec.site, []).append(_replace_hook(lambda _a, m=mean: m, spec.positions, info))
        elif isinstance(spec, PatchActivations):
            if spec.source is not None and text_acts is not None:
                src = text_acts(spec.site, spec.source)
            else:
                src = _source_rows(spec, info, load_states)
            hooks.setdefault(spec.site, []).append(_replace_hook(lambda _a, s=src.to(lm.device): s,
                                                                 spec.positions, info))
    return hooks


_MEANS: dict[int, np.ndarray] = {}      # id(states) -> row mean, dropped when the array is freed


def _mean_of(states: np.ndarray) -> np.ndarray:
    """:func:`_chunked_mean`, computed once per states array (step_hooks runs for every forward)."""
    key = id(states)
    if key not in _MEANS:
        _MEANS[key] = _chunked_mean(states)
        weakref.finalize(states, _MEANS.pop, key, None)
    return _MEANS[key]


def _chunked_mean(states: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Row mean of a (memory-mapped) [N, D] array in float64, reading ``chunk`` rows at a time."""
    total = np.zeros(states.shape[1], dtype=np.float64)
    for start in range(0, states.shape[0], chunk):
        total += np.asarray(states[start:start + chunk], dtype=np.float64).sum(0)
    return total / max(1, states.shape[0])


def _source_rows(spec: PatchActivations, info: StepInfo, load_states: StateLoader) -> Tensor:
    """The capture run's states at ``spec.site`` for one step, indexed by position (pos, d)."""
    states, steps = load_states(spec.capture_run_id, spec.site)
    default = info.step if info.source_step is None else info.source_step
    want = default if spec.source_step is None else spec.source_step
    entry = next((s for s in steps if s["step"] == want), None)
    if entry is None:
        raise InputError("interventions", f"capture run {spec.capture_run_id} has no step {want}",
                         fix="set source_step to a step that run captured")
    start, end = entry["rows"]
    positions = entry["positions"]
    if positions != list(range(len(positions))) or entry.get("skipped"):
        raise InputError("interventions", f"capture run {spec.capture_run_id} did not capture every position",
                         fix="capture the source run with positions='all' and skip_positions=0")
    return torch.from_numpy(np.array(states[start:end], dtype=np.float32))


@contextmanager
def knockout(lm: LoadedModel, specs: Sequence[Any], info: StepInfo) -> Iterator[None]:
    """Rewrite the attention mask of the chosen layers while the block runs (active specs only)."""
    active = [s for s in specs if isinstance(s, AttentionKnockout) and s.active(info.step)]
    handles = []
    try:
        for spec in active:
            for layer in spec.layers if spec.layers is not None else range(lm.n_layers):
                module = attn_module(lm, layer, 1)
                handles.append(module.register_forward_pre_hook(_mask_hook(spec, info, lm.lm_kind), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _mask_hook(spec: AttentionKnockout, info: StepInfo, kind: str) -> Callable:
    def hook(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden = args[0] if args else kwargs["hidden_states"]
        b, s = hidden.shape[0], hidden.shape[1]
        mask = _additive_mask(kwargs.get("attention_mask"), b, s, info.start, hidden.dtype, hidden.device,
                              causal=kind == "causal")
        q = fed_positions(spec.query_positions, info, s)                       # query rows of this forward
        k = resolve_positions(spec.key_positions, info.prompt_len, info.start + s) or []
        if q and k:
            qi = torch.tensor(q, device=hidden.device)[:, None]
            ki = torch.tensor(k, device=hidden.device)[None, :]
            mask[:, :, qi, ki] = torch.finfo(hidden.dtype).min
        return args, {**kwargs, "attention_mask": mask}
    return hook


def _additive_mask(mask: Tensor | None, b: int, s: int, start: int, dtype: torch.dtype, device: torch.device,
                   causal: bool) -> Tensor:
    """The mask the attention would use, as an additive float tensor (batch, 1, query, key); the ``s``
    queries sit at positions ``start ..`` over ``start + s`` keys (``start`` > 0 on the KV-cache path)."""
    low = torch.finfo(dtype).min
    if mask is None:
        base = torch.zeros(b, 1, s, start + s, dtype=dtype, device=device)
        if causal:
            base = base.masked_fill(torch.ones(s, start + s, dtype=torch.bool, device=device).triu(start + 1), low)
        return base
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, low).clone()
    return mask.to(dtype).clone()
