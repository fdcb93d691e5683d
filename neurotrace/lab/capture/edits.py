"""Step-scoped interventions applied while capturing: zero, heads, mean, patch, attention knockout.

Each intervention names the episode ``steps`` it applies to (``None`` = every step) and the token
``positions`` it touches (``None`` = every position; a negative index counts back from the end of the
step's prompt, so ``-1`` is the last prompt token). A step's forward passes re-run the whole sequence
(no KV cache), so position ``p`` always means token ``p`` of the step's input.

* ``zero``: set the activation at ``site`` to 0 at the positions. Zeroing ``hook_attn_out`` and
  ``hook_mlp_out`` of a layer at every position removes that layer's contribution to the residual.
* ``zero_heads``: set the chosen heads' outputs to 0 before the attention output projection
  (``blocks.{L}.attn.hook_z``, see :mod:`neurotrace.lab.model.sites`).
* ``mean``: replace the activation with its mean over every row of a reference capture run.
* ``patch``: replace the activation with the state another capture run recorded at the same site,
  step and position (that run must have captured ``positions='all'``).
* ``knockout``: query positions ``query_positions`` may not attend to key positions
  ``key_positions`` in the chosen layers. The attention module's ``attention_mask`` keyword is
  rewritten into an additive float mask (the causal pattern or the model's own mask, plus
  ``finfo.min`` at the knocked-out (query, key) pairs), which both the eager and the SDPA attention
  paths of transformers accept; flash-attention kernels do not, so load such models with the default.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.loading import LoadedModel
from neurotrace.lab.model.sites import attn_module, check_site, n_heads

Steps = Annotated[list[Annotated[int, Field(ge=0)]] | None,
                  Field(description="Episode steps (0-based) where this applies; null = every step.")]
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


class MeanAblation(_Spec):
    kind: Literal["mean"] = "mean"
    site: str = Field(description="Site to replace by its reference mean.")
    reference_run: str = Field(description="A capture run id that recorded `site`; its mean over all rows is used.")
    positions: Positions = None


class PatchActivations(_Spec):
    kind: Literal["patch"] = "patch"
    site: str = Field(description="Site to patch.")
    source_run: str = Field(description="A capture run id that recorded `site` with positions='all'.")
    source_step: int | None = Field(None, ge=0, description="Source step to read; null = the same step index.")
    positions: Positions = None


class AttentionKnockout(_Spec):
    kind: Literal["knockout"] = "knockout"
    layers: list[Annotated[int, Field(ge=0)]] | None = Field(None, description="Layers; null = every layer.")
    query_positions: list[int] = Field(min_length=1, description="Positions that may no longer attend ...")
    key_positions: list[int] = Field(min_length=1, description="... to these positions.")


CaptureIntervention = Annotated[ZeroAblation | HeadAblation | MeanAblation | PatchActivations | AttentionKnockout,
                                Field(discriminator="kind")]


@dataclass
class StepInfo:
    """What a hook needs to know about the running step."""

    step: int
    prompt_len: int


def resolve_positions(positions: Sequence[int] | None, prompt_len: int, seq_len: int) -> list[int] | None:
    """Absolute positions < seq_len (negative ones from the end of the prompt); None = all."""
    if positions is None:
        return None
    out = [p if p >= 0 else prompt_len + p for p in positions]
    return sorted({p for p in out if 0 <= p < seq_len})


def _select(act: Tensor, positions: Sequence[int] | None, info: StepInfo) -> Any:
    pos = resolve_positions(positions, info.prompt_len, act.shape[1])
    return slice(None) if pos is None else torch.tensor(pos, dtype=torch.long, device=act.device)


def validate(specs: Sequence[Any], lm: LoadedModel, sites_of: Callable[[str], dict[str, Any]]) -> None:
    """Raise InputError('interventions') for specs that do not fit the model or their source runs."""
    for i, spec in enumerate(specs):
        if isinstance(spec, ZeroAblation | MeanAblation | PatchActivations):
            check_site(spec.site, lm, field="interventions")
        if isinstance(spec, HeadAblation):
            if spec.layer >= lm.n_layers or max(spec.heads) >= n_heads(lm):
                raise InputError("interventions", f"intervention {i}: layer {spec.layer} / heads {spec.heads} out "
                                 f"of range ({lm.n_layers} layers, {n_heads(lm)} heads)",
                                 fix="use valid layer and head indices")
        if isinstance(spec, AttentionKnockout) and spec.layers and max(spec.layers) >= lm.n_layers:
            raise InputError("interventions", f"intervention {i}: knockout layer out of range ({lm.n_layers} layers)",
                             fix=f"use layers in 0..{lm.n_layers - 1}")
        run = getattr(spec, "reference_run", None) or getattr(spec, "source_run", None)
        if run is not None and spec.site not in sites_of(run):
            raise InputError("interventions", f"intervention {i}: run {run} did not capture {spec.site}",
                             fix="capture that site in the reference/source run first")


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
        pos = resolve_positions(positions, info.prompt_len, act.shape[1])
        pos = list(range(act.shape[1])) if pos is None else pos
        src = values(act)                                                        # (src_pos, d) or (d,)
        if src.dim() == 1:
            out[:, pos] = src.to(act.dtype)
        else:
            pos = [p for p in pos if p < src.shape[0]]
            out[:, pos] = src[pos].to(act.dtype)
        return out
    return fn


def step_hooks(specs: Sequence[Any], info: StepInfo, lm: LoadedModel,
               load_states: Callable[[str, str], tuple[np.ndarray, list[dict]]]) -> dict[str, list[Callable]]:
    """{site: [hook fns]} for the specs active at ``info.step`` (knockouts excluded: see :func:`knockout`)."""
    hooks: dict[str, list[Callable]] = {}
    for spec in specs:
        if not spec.active(info.step):
            continue
        if isinstance(spec, ZeroAblation):
            hooks.setdefault(spec.site, []).append(_zero_hook(spec, info))
        elif isinstance(spec, HeadAblation):
            hooks.setdefault(f"blocks.{spec.layer}.attn.hook_z", []).append(_heads_hook(spec, info, n_heads(lm)))
        elif isinstance(spec, MeanAblation):
            states, _ = load_states(spec.reference_run, spec.site)
            mean = torch.from_numpy(_chunked_mean(states)).float().to(lm.device)
            hooks.setdefault(spec.site, []).append(_replace_hook(lambda _a, m=mean: m, spec.positions, info))
        elif isinstance(spec, PatchActivations):
            src = _source_rows(spec, info.step, load_states)
            src = src.to(lm.device)
            hooks.setdefault(spec.site, []).append(_replace_hook(lambda _a, s=src: s, spec.positions, info))
    return hooks


def _chunked_mean(states: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Row mean of a (memory-mapped) [N, D] array in float64, reading ``chunk`` rows at a time."""
    total = np.zeros(states.shape[1], dtype=np.float64)
    for start in range(0, states.shape[0], chunk):
        total += np.asarray(states[start:start + chunk], dtype=np.float64).sum(0)
    return total / max(1, states.shape[0])


def _source_rows(spec: PatchActivations, step: int, load_states: Callable) -> Tensor:
    """The source run's states at ``spec.site`` for one step, indexed by position (pos, d)."""
    states, steps = load_states(spec.source_run, spec.site)
    want = step if spec.source_step is None else spec.source_step
    entry = next((s for s in steps if s["step"] == want), None)
    if entry is None:
        raise InputError("interventions", f"source run {spec.source_run} has no step {want}",
                         fix="set source_step to a step that run captured")
    start, end = entry["rows"]
    positions = entry["positions"]
    if positions != list(range(len(positions))):
        raise InputError("interventions", f"source run {spec.source_run} did not capture every position",
                         fix="capture the source run with positions='all'")
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
                handles.append(module.register_forward_pre_hook(_mask_hook(spec, info, lm.kind), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _mask_hook(spec: AttentionKnockout, info: StepInfo, kind: str) -> Callable:
    def hook(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden = args[0] if args else kwargs["hidden_states"]
        b, s = hidden.shape[0], hidden.shape[1]
        mask = _additive_mask(kwargs.get("attention_mask"), b, s, hidden.dtype, hidden.device, causal=kind == "causal")
        q = resolve_positions(spec.query_positions, info.prompt_len, s) or []
        k = resolve_positions(spec.key_positions, info.prompt_len, s) or []
        if q and k:
            qi = torch.tensor(q, device=hidden.device)[:, None]
            ki = torch.tensor(k, device=hidden.device)[None, :]
            mask[:, :, qi, ki] = torch.finfo(hidden.dtype).min
        return args, {**kwargs, "attention_mask": mask}
    return hook


def _additive_mask(mask: Tensor | None, b: int, s: int, dtype: torch.dtype, device: torch.device,
                   causal: bool) -> Tensor:
    """The mask the attention would use, as an additive float tensor (batch, 1, query, key)."""
    low = torch.finfo(dtype).min
    if mask is None:
        base = torch.zeros(b, 1, s, s, dtype=dtype, device=device)
        if causal:
            base = base.masked_fill(torch.ones(s, s, dtype=torch.bool, device=device).triu(1), low)
        return base
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, low).clone()
    return mask.to(dtype).clone()
