"""Dictionaries (SAEs and transcoders) from any source, behind one inference interface.

A *dictionary reference* (:data:`DictionaryRef`, the request field every tool that reads a dictionary
takes) is one of:

* a ``fit_sae`` run id (``20260101-...-fit_sae-1a2b3c4d``): the dictionary that run fitted;
* a local folder in SAELens' layout (``cfg.json`` + ``sae_weights.safetensors``, what SAELens'
  ``save_model`` writes and how Gemma Scope 2's gemma-3-270m SAEs and transcoders load), under the
  server's input directories (the same sandbox as ``prompt_file``);
* ``release/sae_id`` or ``release:sae_id`` of SAELens' pretrained registry, downloaded when online
  (:mod:`neurotrace.lab.sae.releases`).

:func:`load_dictionary` returns a :class:`Dictionary`::

    d = load_dictionary(lab, ref)
    a = d.encode(h)                  # (..., d_sae) feature activations of states at d.cfg.site
    y = d.decode(a)                  # (..., d_out) reconstruction at d.cfg.out_site (== site for an SAE)
    d.W_dec                          # (d_sae, d_out); d.W_enc (d_in, d_sae)
    d.cfg.sha256                     # of the weights file, recorded in the manifest (record_dictionary)

Weights are read only from safetensors (a ``.pt``/``.bin``/pickle is refused, never unpickled), and
:func:`check_fits` refuses a dictionary whose ``d_in`` or site does not fit a model, naming both.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from neurotrace.lab.errors import InputError, NotFound
from neurotrace.lab.lab import Lab
from neurotrace.lab.runs import RUN_ID_RE
from neurotrace.lab.sae import saelens
from neurotrace.lab.sae.density import SPARSITY_FILE, Density, from_sparsity, from_table
from neurotrace.lab.sae.schema import DictionaryRef

__all__ = ["Dictionary", "DictionaryConfig", "DictionaryRef", "check_fits", "load_dictionary", "record_dictionary"]

MAX_DICTIONARY_BYTES = 8 << 30
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".npz")


class DictionaryConfig(BaseModel):
    """What a loaded dictionary is and where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    architecture: str = Field(description="SAELens' name: standard, topk, jumprelu, batchtopk, transcoder, "
                              "skip_transcoder, jumprelu_transcoder, ...")
    activation: str = Field(description="'relu', 'topk' or 'jumprelu': how encode sparsifies.")
    d_in: int = Field(ge=1)
    d_sae: int = Field(ge=1)
    d_out: int = Field(ge=1, description="Width of decode's output (== d_in for an SAE).")
    k: int | None = Field(None, description="Active features per row (topk).")
    site: str = Field(description="Our site name of the input hook, e.g. 'blocks.6.hook_resid_post'.")
    out_site: str = Field(description="Where decode's output lives (== site for an SAE).")
    hook_name: str = Field("", description="The input hook as the file names it.")
    hook_name_out: str = Field("", description="The output hook as the file names it.")
    transcoder: bool = False
    skip: bool = Field(False, description="Has a linear skip connection W_skip (d_out, d_in).")
    apply_b_dec_to_input: bool = True
    rescale_acts_by_decoder_norm: bool = False
    model: str = Field("", description="The model the dictionary was trained on, as the file names it.")
    sha256: str = Field("", description="sha256 of the weights file.")
    source: str = Field("", description="The reference it was loaded from (run id, folder, release/id).")
    kind: str = Field("", description="'run', 'folder' or 'release'.")
    capture_run_id: str = Field("", description="The capture run a fit_sae dictionary was fitted on.")
    input_scale: float = Field(1.0, description="Always 1: scalings are folded into the weights.")


class Dictionary(nn.Module):
    """An SAE or transcoder for inference: ``encode``, ``decode``, ``forward``, ``directions``."""

    def __init__(self, cfg: DictionaryConfig, tensors: dict[str, Tensor]) -> None:
        super().__init__()
        self.cfg = cfg
        for name, value in tensors.items():
            self.register_buffer(name, value.detach().to(torch.float32).clone())
        if "threshold" not in tensors:
            self.threshold = None
        if "W_skip" not in tensors:
            self.W_skip = None
        self.density: Density | None = None     # each feature's firing rate, where known (sae.density)

    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor
    threshold: Tensor | None
    W_skip: Tensor | None

    @property
    def input_scale(self) -> float:
        return 1.0

    @property
    def output_scale(self) -> float:
        return 1.0

    @property
    def transcoder(self) -> bool:
        return self.cfg.transcoder

    @property
    def d_out(self) -> int:
        return self.cfg.d_out

    def skip_term(self, x: Tensor) -> Tensor | float:
        """A skip transcoder's ``x @ W_skip.T`` (0 without a skip)."""
        return x.to(self.W_skip.dtype) @ self.W_skip.T if self.W_skip is not None else 0.0

    def pre_acts(self, x: Tensor) -> Tensor:
        x = x.to(self.W_enc.dtype)
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_sae"]:
        """Feature activations of inputs at ``cfg.site``."""
        pre = self.pre_acts(x)
        if self.cfg.activation == "relu":
            return pre.relu()
        if self.cfg.activation == "jumprelu":
            assert self.threshold is not None
            return pre.relu() * (pre > self.threshold).to(pre.dtype)
        if self.cfg.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        values, idx = pre.topk(int(self.cfg.k or 1), dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, values.relu())

    def decode(self, a: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_out"]:
        """``a @ W_dec + b_dec``: the reconstruction at ``cfg.out_site`` (without a transcoder's skip term)."""
        a = a.to(self.W_dec.dtype)
        if self.cfg.activation == "topk" and self.cfg.rescale_acts_by_decoder_norm:
            a = a / self.W_dec.norm(dim=-1)
        return a @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        out = self.decode(self.encode(x))
        if self.W_skip is not None:
            out = out + x.to(self.W_skip.dtype) @ self.W_skip.T
        return out

    def directions(self, features: Int[Tensor, " n"]) -> Float[Tensor, "n d_out"]:
        """Decoder rows of ``features`` (n, d_out): a change ``da`` moves the output by ``da @ this``."""
        w = self.W_dec[features]
        if self.cfg.activation == "topk" and self.cfg.rescale_acts_by_decoder_norm:
            w = w / w.norm(dim=-1, keepdim=True)
        return w

    def tensors(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.named_buffers()}

    def saelens_cfg(self) -> dict[str, Any]:
        """The cfg.json dict SAELens loads this dictionary from."""
        return saelens.to_cfg(self.cfg.model_dump())

    def save_saelens(self, directory: Path | str) -> None:
        """Write cfg.json + sae_weights.safetensors (SAELens' ``save_model`` layout)."""
        saelens.write_folder(Path(directory), self.saelens_cfg(), self.tensors())


# -- loading --------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_safetensors(path: Path, field: str) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or head[:1] in (b"\x80", b"PK") or head[:2] == b"PK":
        raise InputError(field, f"{path.name} is not a safetensors file (a pickle or zip checkpoint is never "
                         "loaded)", fix="convert the weights to safetensors")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(field, f"{path.name} is not a readable safetensors file",
                         fix="pass sae_weights.safetensors as SAELens wrote it") from exc


def from_folder_files(cfg_path: Path, weights_path: Path, field: str, source: str, kind: str,
                      sparsity: Path | None = None, **extra: Any) -> Dictionary:
    """A dictionary from a SAELens cfg.json and its safetensors weights (all vetted paths), with its features'
    density from SAELens' ``sparsity`` file when there is one."""
    if weights_path.suffix.lower() in _PICKLE_SUFFIXES or weights_path.suffix.lower() != ".safetensors":
        raise InputError(field, f"{weights_path.name} is not a .safetensors file (pickled weights are never loaded)",
                         fix="convert the weights to safetensors (sae_weights.safetensors)")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(field, f"{cfg_path.name} is not valid UTF-8 JSON", fix="pass SAELens' cfg.json") from exc
    c = saelens.parse_cfg(raw, field)
    tensors = saelens.check_tensors(c, read_safetensors(weights_path, field), field)
    c.pop("dtype")
    cfg = DictionaryConfig(**c, sha256=file_sha256(weights_path), source=source, kind=kind, **extra)
    d = Dictionary(cfg, tensors).eval()
    if sparsity is not None:
        d.density = from_sparsity(read_safetensors(sparsity, field), cfg.d_sae, f"{SPARSITY_FILE} of {source}")
    return d


def _folder(lab: Lab, ref: str, field: str) -> Dictionary:
    """The dictionary in a local folder (SAELens layout, or Gemma Scope 2's), inside the input directories."""
    from dataclasses import replace

    from neurotrace.lab.inputs import shown_path

    policy = replace(lab.inputs, max_bytes=MAX_DICTIONARY_BYTES)
    base = ref.rstrip("/")
    for name in (saelens.CFG_FILE, saelens.WEIGHTS_FILE, "params.safetensors", "config.json"):
        if base.endswith("/" + name) or base == name:
            base = base[:-len(name)].rstrip("/") or "."
    if Path(base).suffix.lower() in _PICKLE_SUFFIXES:
        raise InputError(field, f"{Path(base).name} is a pickle-format checkpoint; it is never loaded",
                         fix="convert the weights to safetensors in a SAELens folder (cfg.json + "
                         "sae_weights.safetensors)")
    source = shown_path(base, lab.store.root) if Path(base).is_absolute() else base

    def find(name: str) -> Path | None:
        try:
            return policy.resolve(f"{base}/{name}", field)
        except NotFound:
            return None

    cfg, weights = find(saelens.CFG_FILE), find(saelens.WEIGHTS_FILE)
    if cfg is not None and weights is not None:
        return from_folder_files(cfg, weights, field, source=source, kind="folder", sparsity=find(SPARSITY_FILE))
    params = find("params.safetensors")
    if params is not None:
        from neurotrace.lab.sae.releases import from_gemma_scope

        return from_gemma_scope(params, find("config.json"), f"{params.parent.parent.name}/{params.parent.name}", field, source=source, kind="folder")
    where = (cfg or weights or params)
    folder = where.parent if where is not None else None
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES) if folder else []
    raise InputError(field, f"no {saelens.CFG_FILE} + {saelens.WEIGHTS_FILE} (or Gemma Scope params.safetensors) "
                     f"in {source!r}" + (f"; only pickle-format weights {pickles}, which are never loaded"
                                         if pickles else ""),
                     fix="pass a folder SAELens' save_model wrote (cfg.json + sae_weights.safetensors), under the "
                     "input directories")


def load_dictionary(lab: Lab, ref: str, device: str | torch.device = "cpu",
                    field: str = "dictionary") -> Dictionary:
    """The dictionary ``ref`` names (see the module docstring), on ``device``, in eval mode."""
    ref = (ref or "").strip()
    if not ref:
        raise InputError(field, "empty dictionary reference", fix="pass a fit_sae run_id, a folder or release/id")
    if Path(ref).suffix.lower() in _PICKLE_SUFFIXES:
        raise InputError(field, f"{Path(ref).name} is a pickle-format checkpoint; it is never loaded",
                         fix="convert the weights to safetensors in a SAELens folder (cfg.json + "
                         "sae_weights.safetensors)")
    if RUN_ID_RE.match(ref) and (lab.store.root / ref).is_dir():
        d = from_run(lab, ref, field)
    elif _looks_local(lab, ref):
        d = _folder(lab, ref, field)
    else:
        from neurotrace.lab.sae.releases import load_release

        d = load_release(ref, field)
    return d.to(device)


def _looks_local(lab: Lab, ref: str) -> bool:
    """A path (absolute, ./, ~, or existing under an input directory) rather than a release id."""
    if ref.startswith(("/", "./", "../", "~")) or os.sep != "/" and os.sep in ref:
        return True
    return any((root / ref).exists() for root in lab.inputs.roots)


def from_run(lab: Lab, run_id: str, field: str) -> Dictionary:
    """The dictionary a complete fit_sae run wrote (its SAELens export; older runs: their own files)."""
    manifest = lab.store.manifest(run_id)
    if manifest.tool != "fit_sae" or manifest.status != "complete":
        raise InputError(field, f"run {run_id} is a {manifest.status} {manifest.tool} run, not a complete fit_sae",
                         fix="pass the run_id a fit_sae call returned")
    run_dir = lab.store.run_dir(run_id)
    own = json.loads((run_dir / "sae_config.json").read_text(encoding="utf-8"))
    extra = {"capture_run_id": own.get("capture_run_id", "")}
    folder = run_dir / "saelens"
    if (folder / saelens.CFG_FILE).is_file() and (folder / saelens.WEIGHTS_FILE).is_file():
        sparsity = folder / SPARSITY_FILE
        d = from_folder_files(folder / saelens.CFG_FILE, folder / saelens.WEIGHTS_FILE, field, run_id, "run",
                              sparsity=sparsity if sparsity.is_file() else None, **extra)
    else:
        from neurotrace.lab.sae.architectures.registry import load_sae
        from neurotrace.lab.sae.export import dictionary_from_sae

        d = dictionary_from_sae(load_sae(run_dir), source=run_id, kind="run")
        d = Dictionary(d.cfg.model_copy(update={"sha256": file_sha256(run_dir / "sae.safetensors")}), d.tensors())
    where = f"fit_sae run {run_id}'s training and held-out rows"
    d.density = (Density(d.density.rates, where) if d.density is not None   # older runs: their density table
                 else from_table(run_dir / "tables" / "feature_density.csv", d.cfg.d_sae, where))
    return d


# -- fitting a model ------------------------------------------------------------------------------
def site_width(lm: Any, site: str) -> int | None:
    """How wide ``site`` is in ``lm`` (None: a site this package cannot hook)."""
    from neurotrace.lab.model.access.adapters import SITE_RE

    if site == "hook_embed":
        return int(lm.d_model)
    m = SITE_RE.match(site)
    if m is None:
        return None
    kind = m.group(2)
    if kind == "mlp.hook_post":
        return int(lm.d_mlp)
    if kind == "attn.hook_z":
        return int(lm.n_heads) * int(lm.d_head)
    return int(lm.d_model)


def check_fits(d: Dictionary, lm: Any, model_name: str, field: str = "dictionary") -> None:
    """InputError naming both sides when ``d``'s sites or widths do not fit the loaded model ``lm``."""
    c = d.cfg
    for site, width, what in ((c.site, c.d_in, "d_in"), (c.out_site, c.d_out, "d_out")):
        have = site_width(lm, site)
        if have is None:
            raise InputError(field, f"the dictionary reads site {site!r} (hook {c.hook_name!r}), which model "
                             f"{model_name!r} does not expose", fix="use a dictionary trained on one of this "
                             "model's sites (blocks.L.hook_resid_post, hook_mlp_out, hook_attn_out, ...)")
        if have != width:
            raise InputError(field, f"dictionary {what}={width} at {site} does not fit model {model_name!r}, "
                             f"whose {site} is {have} wide", fix=f"use a dictionary trained on {model_name}")
        if site.startswith("blocks."):
            layer = int(site.split(".")[1])
            if layer >= int(lm.n_layers):
                raise InputError(field, f"the dictionary's site {site} is past model {model_name!r}'s "
                                 f"{lm.n_layers} layers", fix=f"use a dictionary trained on {model_name}")


def record_dictionary(run: Any, d: Dictionary) -> None:
    """Note in a run's manifest which dictionary it used and its weights' sha256."""
    if d.cfg.kind == "run":
        run.add_input(d.cfg.source)
    add = getattr(run, "add_dictionary", None)
    if add is not None:
        add(d.cfg.source, {"sha256": d.cfg.sha256, "kind": d.cfg.kind, "architecture": d.cfg.architecture,
                           "site": d.cfg.site, "out_site": d.cfg.out_site, "d_sae": d.cfg.d_sae})
