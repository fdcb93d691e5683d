"""Per-layer transcoders (PLTs): the feature dictionaries that replace each MLP in the local replacement model.

A transcoder for layer ``L`` reads the MLP's input ``x`` (the residual after the pre-MLP norm,
``blocks.L.ln2.hook_normalized`` = ``blocks.L.mlp.hook_in``) and predicts the MLP's contribution to the
residual (``blocks.L.hook_mlp_out``):

    a = act(W_enc x + b_enc)          # (d_transcoder,)  ReLU, or JumpReLU: z * (z > threshold)
    y = a @ W_dec + b_dec (+ W_skip x)

Weights are read only from safetensors, in two layouts:

* **circuit-tracer**: one folder with ``layer_{L}.safetensors`` per layer holding ``W_enc``
  ``(d_transcoder, d_model)``, ``W_dec`` ``(d_transcoder, d_model)``, ``b_enc``, ``b_dec`` and optionally
  ``activation_function.threshold`` and ``W_skip`` ``(d_model, d_model)`` (Gemma Scope 2's keys ``w_enc``
  ``(d_model, d_transcoder)``, ``w_dec``, ``threshold``, ``affine_skip_connection`` are read too); an optional
  ``config.yaml`` names ``feature_input_hook`` / ``feature_output_hook``.
* **SAELens / Gemma Scope**: a folder whose sub-folders (any depth up to 3) each hold ``cfg.json`` +
  ``sae_weights.safetensors`` (``W_enc`` ``(d_in, d_sae)``, ``W_dec`` ``(d_sae, d_out)``, ``b_enc``, ``b_dec``,
  ``threshold``), the layer read from ``cfg.json``'s ``hook_name`` (``blocks.L....``).

:func:`random_transcoders` builds a seeded random set in code (tests, timing, and a control that must
explain nothing). :func:`check_against` raises an :class:`InputError` naming the field when a set does
not match the model (layers, widths).
"""

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from neurotrace.lab.errors import InputError

IN_SITES = ("ln2.hook_normalized", "mlp.hook_in")      # both name the MLP module's input
OUT_SITES = ("hook_mlp_out", "mlp.hook_out")           # the MLP's contribution to the residual
FIELD = "transcoders"


@dataclass
class Transcoder:
    """One layer's transcoder, circuit-tracer orientation (rows are features)."""

    W_enc: Tensor                # (d_transcoder, d_in)
    b_enc: Tensor                # (d_transcoder,)
    W_dec: Tensor                # (d_transcoder, d_out)
    b_dec: Tensor                # (d_out,)
    threshold: Tensor | None = None   # (d_transcoder,) JumpReLU threshold; None: ReLU
    W_skip: Tensor | None = None      # (d_out, d_in)

    @property
    def width(self) -> int:
        return int(self.W_enc.shape[0])

    def pre(self, x: Tensor) -> Tensor:
        """(..., d_in) -> (..., d_transcoder) pre-activations."""
        return x.float() @ self.W_enc.T + self.b_enc

    def activate(self, z: Tensor) -> Tensor:
        if self.threshold is None:
            return torch.relu(z)
        return z * (z > self.threshold)

    def encode(self, x: Tensor) -> Tensor:
        return self.activate(self.pre(x))

    def decode(self, a: Tensor, x: Tensor) -> Tensor:
        """(..., d_transcoder) activations (+ the input, for the skip) -> (..., d_out) reconstruction."""
        y = a @ self.W_dec + self.b_dec
        return y + self.skip(x) if self.W_skip is not None else y

    def skip(self, x: Tensor) -> Tensor:
        return x.float() @ self.W_skip.T


@dataclass
class TranscoderSet:
    """One transcoder per layer, where they read and write, and where they came from."""

    layers: list[Transcoder]
    in_site: str = "mlp.hook_in"
    out_site: str = "hook_mlp_out"
    source: str = "random"
    sha256: str = ""
    refs: dict[int, str] = field(default_factory=dict)                  # layer -> dictionary reference
    names: dict[tuple[int, int], str] = field(default_factory=dict)     # (layer, feature) -> name

    @property
    def width(self) -> int:
        return self.layers[0].width

    @property
    def skip(self) -> bool:
        return any(t.W_skip is not None for t in self.layers)


def random_transcoders(n_layers: int, d_model: int, width: int, *, seed: int = 0, threshold: float | None = None,
                       scale: float = 1.0, skip: bool = False) -> TranscoderSet:
    """A seeded random set: unit-norm encoder rows, decoder rows of norm ``scale`` / sqrt(width) (so a layer's
    reconstruction has a norm of order ``scale``), JumpReLU at ``threshold`` when given (sparser), else ReLU."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for _ in range(n_layers):
        enc = torch.randn(width, d_model, generator=g)
        enc = enc / enc.norm(dim=1, keepdim=True)
        dec = torch.randn(width, d_model, generator=g)
        dec = dec / dec.norm(dim=1, keepdim=True) * scale / width ** 0.5
        b_enc = 0.1 * torch.randn(width, generator=g)
        thr = None if threshold is None else torch.full((width,), float(threshold))
        w_skip = 0.05 * torch.randn(d_model, d_model, generator=g) / d_model ** 0.5 if skip else None
        layers.append(Transcoder(enc, b_enc, dec, 0.01 * torch.randn(d_model, generator=g), thr, w_skip))
    return TranscoderSet(layers, source=f"random(width={width}, seed={seed})",
                         sha256=hashlib.sha256(f"random:{n_layers}:{d_model}:{width}:{seed}:{threshold}:{scale}:{skip}"
                                               .encode()).hexdigest())


@torch.no_grad()
def calibrate(tcs: TranscoderSet, mlp_in: list[Tensor], l0: int) -> None:
    """Set each layer's JumpReLU threshold so that about ``l0`` features fire per position on ``mlp_in``
    (per layer (pos, d_in); the first position, which carries no features, is left out)."""
    for t, x in zip(tcs.layers, mlp_in, strict=True):
        pre = t.pre(x[1:] if len(x) > 1 else x)
        q = 1.0 - min(l0, t.width) / t.width
        t.threshold = torch.full((t.width,), float(torch.quantile(pre.flatten(), q)))
    tcs.source += f", l0 {l0} on the prompt"


def _read(path: Path) -> dict[str, Tensor]:
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _hooks_from_yaml(folder: Path) -> tuple[str, str]:
    """(feature_input_hook, feature_output_hook) from a circuit-tracer config.yaml, read line by line."""
    found = {"feature_input_hook": "mlp.hook_in", "feature_output_hook": "hook_mlp_out"}
    for cfg in sorted(folder.glob("*.yaml")):
        for line in cfg.read_text(encoding="utf-8", errors="replace").splitlines():
            m = re.match(r"\s*(feature_input_hook|feature_output_hook)\s*:\s*['\"]?([\w.]+)", line)
            if m:
                found[m.group(1)] = m.group(2)
    return found["feature_input_hook"], found["feature_output_hook"]


def _from_circuit_tracer(params: dict[str, Tensor], name: str) -> Transcoder:
    if "w_enc" in params:                                   # Gemma Scope 2 keys
        skip = params.get("affine_skip_connection")
        return Transcoder(params["w_enc"].T.contiguous(), params["b_enc"], params["w_dec"], params["b_dec"],
                          params.get("threshold"), None if skip is None else skip.T.contiguous())
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in params]
    if missing:
        raise InputError(FIELD, f"{name} lacks {', '.join(missing)}",
                         fix="give circuit-tracer layer_{L}.safetensors files (W_enc, W_dec, b_enc, b_dec)")
    return Transcoder(params["W_enc"], params["b_enc"], params["W_dec"], params["b_dec"],
                      params.get("activation_function.threshold"), params.get("W_skip"))


def _layer_of(hook: str, name: str) -> int:
    m = re.match(r"blocks\.(\d+)\.", hook or "")
    if not m:
        raise InputError(FIELD, f"{name}: cfg.json's hook_name {hook!r} names no layer",
                         fix="use SAELens transcoder folders whose hook_name is blocks.{L}.ln2.hook_normalized")
    return int(m.group(1))


def _from_saelens(cfg_path: Path, shown: str) -> tuple[int, Transcoder, str, str]:
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    weights = cfg_path.parent / "sae_weights.safetensors"
    if not weights.is_file():
        raise InputError(FIELD, f"{shown} has cfg.json but no sae_weights.safetensors",
                         fix="weights are read from safetensors only")
    p = _read(weights)
    hook_in = str(cfg.get("hook_name", ""))
    hook_out = str(cfg.get("hook_name_out") or hook_in.replace("ln2.hook_normalized", "hook_mlp_out"))
    layer = _layer_of(hook_in, shown)
    thr = p.get("threshold")
    skip = p.get("W_skip")
    tc = Transcoder(p["W_enc"].T.contiguous(), p["b_enc"], p["W_dec"], p["b_dec"], thr, skip)
    return layer, tc, hook_in.split(".", 2)[-1], hook_out.split(".", 2)[-1]


def load_transcoders(folder: Path, shown: str) -> TranscoderSet:
    """A transcoder set from ``folder`` (circuit-tracer or SAELens layout; see the module docstring)."""
    ct = sorted(folder.glob("layer_*.safetensors"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if ct:
        in_hook, out_hook = _hooks_from_yaml(folder)
        layers = {int(re.sub(r"\D", "", p.stem)): _from_circuit_tracer(_read(p), p.name) for p in ct}
        return _assemble(layers, in_hook, out_hook, shown, ct)
    cfgs = sorted({*folder.glob("cfg.json"), *folder.glob("*/cfg.json"), *folder.glob("*/*/cfg.json"),
                   *folder.glob("*/*/*/cfg.json")})
    if not cfgs:
        raise InputError(FIELD, f"{shown} holds neither layer_{{L}}.safetensors files nor SAELens cfg.json folders",
                         fix="give a circuit-tracer transcoder folder or a folder of SAELens transcoder folders")
    layers, hooks = {}, set()
    for cfg in cfgs:
        layer, tc, h_in, h_out = _from_saelens(cfg, shown)
        if layer in layers:
            raise InputError(FIELD, f"{shown} holds two transcoders for layer {layer}",
                             fix="keep one transcoder folder per layer")
        layers[layer] = tc
        hooks.add((h_in, h_out))
    if len(hooks) != 1:
        raise InputError(FIELD, f"{shown}'s transcoders read and write different sites: {sorted(hooks)}",
                         fix="use one set whose layers all read the MLP input and write the MLP output")
    (h_in, h_out), = hooks
    return _assemble(layers, h_in, h_out, shown, [c.parent / "sae_weights.safetensors" for c in cfgs])


def _assemble(layers: dict[int, Transcoder], in_hook: str, out_hook: str, shown: str,
              files: list[Path]) -> TranscoderSet:
    if in_hook not in IN_SITES or out_hook not in OUT_SITES:
        raise InputError(FIELD, f"{shown}'s transcoders read {in_hook!r} and write {out_hook!r}",
                         fix=f"transcoders must read one of {IN_SITES} and write one of {OUT_SITES}")
    if sorted(layers) != list(range(len(layers))):
        raise InputError(f"{FIELD}.layers", f"{shown} covers layers {sorted(layers)}, not 0..{len(layers) - 1}",
                         fix="give one transcoder for every layer of the model")
    return TranscoderSet([layers[i] for i in range(len(layers))], in_hook, out_hook, shown, _digest(files))


def check_against(tcs: TranscoderSet, n_layers: int, d_model: int, model: str, post_norms: bool) -> None:
    """InputError naming the field when ``tcs`` does not fit the model (layers, widths, sites)."""
    if len(tcs.layers) != n_layers:
        raise InputError(f"{FIELD}.layers", f"the set has {len(tcs.layers)} layers' transcoders, {model} has "
                         f"{n_layers} layers", fix="give one transcoder for every layer of this model")
    for i, t in enumerate(tcs.layers):
        if t.W_enc.shape[1] != d_model or t.b_dec.shape[0] != d_model or t.W_dec.shape[1] != d_model:
            raise InputError(f"{FIELD}.d_in", f"layer {i}'s transcoder reads width {t.W_enc.shape[1]} and writes "
                             f"{t.W_dec.shape[1]}, {model} has d_model {d_model}",
                             fix="use transcoders trained on this model")
        if t.W_dec.shape[0] != t.width or t.b_enc.shape[0] != t.width or (
                t.threshold is not None and t.threshold.shape[0] != t.width):
            raise InputError(f"{FIELD}.d_transcoder", f"layer {i}'s encoder has {t.width} features but its decoder, "
                             f"bias or threshold another count", fix="the transcoder files are inconsistent")
        if t.W_skip is not None and tuple(t.W_skip.shape) != (d_model, d_model):
            raise InputError(f"{FIELD}.W_skip", f"layer {i}'s skip has shape {tuple(t.W_skip.shape)}",
                             fix=f"a skip connection must be ({d_model}, {d_model})")
    if post_norms and tcs.out_site == "mlp.hook_out":
        raise InputError(f"{FIELD}.out_site", f"{model} normalises the MLP output before the residual; "
                         "transcoders writing mlp.hook_out (before that norm) are not supported",
                         fix="use transcoders that write blocks.{L}.hook_mlp_out")
