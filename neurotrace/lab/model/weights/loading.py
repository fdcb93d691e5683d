"""Loading models: by HuggingFace id, local directory or embedded name; as causal or masked LM;
through transformers (``backend='hf'``) or TransformerLens 4's ``TransformerBridge`` (``'bridge'``).

Hub loading is the real code path for users; offline, a model that is not on disk gives a
:class:`NotFound` naming the id and what to do. ``trust_remote_code`` comes only from the server's
settings (:class:`LabSettings`), never from a request.
"""

import functools
import hashlib
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from neurotrace.lab.errors import InputError, NotFound
from neurotrace.lab.model.access.adapters import ArchAdapter, adapter_for
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.derived import apply_delta, parse_edited
from neurotrace.lab.model.weights.embedded import EMBEDDED_MODELS, embedded_model_path
from neurotrace.lab.model.weights.gguf import SOURCE_FILE, Progress, convert_gguf, read_source
from neurotrace.lab.model.weights.lora import ModelName, attach, locate, split
from neurotrace.lab.model.weights.placement import offloaded_tensor

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MAX_MODEL_NAME = 255  # characters in a model name, hub id or path
TOKENIZERS_KEPT = 4   # tokenizers read without their model (load_tokenizer), kept for the next call
MASKED_TYPES = {"bert", "roberta", "xlm-roberta", "modernbert", "distilbert", "electra", "deberta-v2"}


class ModelRef(BaseModel):
    """Which model to use and how to load it. One cached load per (model, kind, backend, dtype, device)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "load_model"
    model: Annotated[ModelName, Field(min_length=1, description="Embedded name ('fact-gpt2'), catalog name "
                                      "('gemma-3-270m'), HuggingFace id, local directory or .gguf file; a base plus "
                                      "a LoRA adapter as 'gemma-3-270m+eiffel-rome-lora' or {base, adapter}.")]
    lm_kind: Literal["auto", "causal", "masked"] = Field("auto", description="LM head to load; 'auto' reads "
                                                                          "the config.")
    backend: Literal["hf", "bridge", "nnsight"] = Field("hf", description="'hf' = transformers; 'bridge' = "
                                                                        "TransformerLens 4's bridge.")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")


@dataclass
class LoadedModel:
    """A loaded model with everything tools need. Hold ``lock`` while hooks are attached."""

    key: str
    ref: ModelRef
    source: str                      # resolved path or hub id
    model: nn.Module                 # the transformers model (the bridge wraps it when backend='bridge')
    tokenizer: Any
    adapter: ArchAdapter
    lm_kind: Literal["causal", "masked"]
    fingerprint: str
    nbytes: int
    bridge: Any = None
    nnsight: Any = None              # nnsight's wrapper of ``model`` when backend='nnsight'
    provenance: dict[str, Any] = field(default_factory=dict)  # e.g. the GGUF file a model was converted from
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def device(self) -> torch.device:
        """Where inputs go: the first placement of a device-mapped model (``device='auto'``), else the
        parameters' device."""
        placed = getattr(self.model, "hf_device_map", None)
        if placed:
            return placement_device(next(iter(placed.values())))
        return next(self.model.parameters()).device

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers(self.model)

    @property
    def d_model(self) -> int:
        c = self.config
        return int(getattr(c, "n_embd", None) or c.hidden_size)

    @property
    def n_heads(self) -> int:
        c = self.config
        return int(getattr(c, "n_head", None) or c.num_attention_heads)

    @property
    def d_head(self) -> int:
        c = self.config
        return int(getattr(c, "head_dim", None) or self.d_model // self.n_heads)

    @property
    def max_positions(self) -> int | None:
        """The longest sequence the model takes (``None`` when the config sets no limit)."""
        c = self.config
        limit = getattr(c, "n_positions", None) or getattr(c, "max_position_embeddings", None)
        return int(limit) if limit else None

    @property
    def d_mlp(self) -> int:
        down = self.adapter.module(self.model, self.adapter.mlp_down, 0)
        if hasattr(down, "in_features"):
            return int(down.in_features)
        return int(down.weight.shape[0])  # GPT-2 Conv1D stores (in, out)

    def info(self) -> dict[str, Any]:
        return {"key": self.key, "model": self.ref.model, "source": self.source, "lm_kind": self.lm_kind,
                "backend": self.ref.backend, "dtype": self.ref.dtype, "device": str(self.device),
                "family": self.adapter.family, "n_layers": self.n_layers, "d_model": self.d_model,
                "d_mlp": self.d_mlp, "n_heads": self.n_heads, "max_positions": self.max_positions, "d_vocab": int(self.config.vocab_size), "bytes": self.nbytes,
                "fingerprint": self.fingerprint, **self.provenance,
                **({"device_map": device_map_info(self.model)} if getattr(self.model, "hf_device_map", None) else {})}


def placement_device(placement: int | str) -> torch.device:
    """The torch device of one accelerate placement (GPU index, 'cpu', 'mps', 'disk')."""
    if isinstance(placement, int):
        return torch.device("cuda", placement)
    return torch.device("cpu" if placement == "disk" else placement)


def device_map_info(model: nn.Module) -> dict[str, Any]:
    """Where a device-mapped model's layers live: {placement: [module names]} (accelerate's hf_device_map)."""
    where: dict[str, list[str]] = {}
    for name, placement in model.hf_device_map.items():
        where.setdefault(str(placement), []).append(name or "(whole model)")
    return where


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError("device", f"unknown device {device!r}", fix="use cpu, cuda, cuda:N, mps or auto") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "CUDA was requested but is not available", fix="use device='cpu' or 'auto'")
    return dev


def resolve_source(name: str, progress: Progress | None = None) -> str:
    """Where ``name``'s HuggingFace files are: embedded name -> package path; catalog name (e.g.
    ``gemma-3-270m``) or ``.gguf`` file / directory holding one -> its converted directory (made once,
    content-addressed by the file's sha256); other existing directory -> absolute path; else a hub id."""
    if "\x00" in name or len(name) > MAX_MODEL_NAME:
        raise InputError("model", "the model name is not a name, hub id or path (NUL or over "
                         f"{MAX_MODEL_NAME} characters)", fix="give an embedded or catalog name, a hub id or a path")
    edited = parse_edited(name)
    if edited is not None:      # an edit run's model: the base's files (its delta is added after loading)
        return resolve_source(edited[0], progress)
    embedded = embedded_model_path(name)
    if embedded is not None:
        return str(embedded)
    if name in catalog.CATALOG:
        return str(catalog.converted(name, progress=progress))
    path = Path(name).expanduser()
    if path.suffix == ".gguf" or (path.is_dir() and not (path / "config.json").is_file()
                                  and any(path.glob("*.gguf"))):
        return str(convert_gguf(path, catalog.default_home() / "converted", progress))
    if path.is_dir():
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise NotFound("model", f"no model directory or .gguf file at {name!r}",
                       fix="check the path; a model is a HuggingFace directory (config.json + weights + tokenizer) "
                           "or a .gguf file")
    return name


def provenance(source: str) -> dict[str, Any]:
    """Where the weights came from: for a converted GGUF, its file, sha256, tensor types and quantisation."""
    if not (Path(source) / SOURCE_FILE).is_file():
        return {}
    record = read_source(source)
    return {"gguf": record, "note": f"weights dequantised from {record.get('quantisation') or 'a quantised GGUF'} "
                                    "to float32: they will not match the full-precision hub model exactly"}


def cache_key(ref: ModelRef) -> str:
    return f"{ref.model}|{ref.lm_kind}|{ref.backend}|{ref.dtype}|{ref.device}"


def fingerprint(model: nn.Module) -> str:
    """A short hash of parameter names, shapes and a sample of values (the same wherever they are placed)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.state_dict().items():
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
            value = offloaded_tensor(model, name) if p.device.type == "meta" else p   # offloaded: stored value
            if value is not None and value.device.type != "meta":
                flat = value.detach().reshape(-1)
                h.update(flat[:: max(1, flat.numel() // 64)][:64].to(torch.float64).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def read_config(source: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig  # heavy import, kept off the package's import path

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        named = [m.name for m in catalog.CATALOG.values() if m.hub_id.lower() == source.lower()]
        fix = (f"offline, use the catalog model {named[0]!r} (install it with `neurotrace models fetch {named[0]}`)"
               if named else "pass a local model directory or .gguf file, point HF_HOME at a cache that holds it "
               "(HF_HUB_OFFLINE=1 stays offline), use a catalog model (" + ", ".join(catalog.CATALOG)
               + ") or an embedded model (" + ", ".join(EMBEDDED_MODELS) + ")")
        raise NotFound("model", f"cannot load model {source!r}: {str(exc).splitlines()[0][:200]}", fix=fix) from exc


@dataclass(frozen=True)
class TokenizerOnly:
    """A model's tokenizer and LM kind, read without its weights (:func:`load_tokenizer`)."""

    name: str
    source: str
    lm_kind: Literal["causal", "masked"]
    tokenizer: Any


@functools.lru_cache(maxsize=TOKENIZERS_KEPT)
def _tokenizer_files(source: str, stamp: int, trust_remote_code: bool) -> Any:
    """The tokenizer read from ``source`` (kept: a 262K-token vocabulary takes seconds to read); ``stamp``
    (the folder's mtime) makes a rewritten folder a new entry."""
    from transformers import AutoTokenizer  # heavy import, kept off the package's import path

    return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)


def load_tokenizer(name: str, *, trust_remote_code: bool = False) -> TokenizerOnly:
    """The tokenizer of ``name`` (embedded or catalog name, hub id, directory, ``BASE+ADAPTER``, an edit's
    model) from its config and tokenizer files only: no weights are read. An adapter changes no token, so
    ``BASE+ADAPTER`` reads the base's (the adapter must exist). The last few tokenizers read are kept and
    shared between callers: read them, never change them."""
    base, adapter = split(name)
    if adapter is not None:
        locate(adapter)
    source = resolve_source(base)
    kind = detect_kind(read_config(source, trust_remote_code), "auto")
    folder = Path(source)
    try:
        tokenizer = _tokenizer_files(source, folder.stat().st_mtime_ns if folder.is_dir() else 0, trust_remote_code)
    except (OSError, ValueError) as exc:
        raise NotFound("model", f"cannot load the tokenizer of {name!r}: {str(exc).splitlines()[0][:200]}",
                       fix="pass a model directory with tokenizer files") from exc
    return TokenizerOnly(name=name, source=source, lm_kind=kind, tokenizer=tokenizer)


def detect_kind(config: Any, requested: str) -> Literal["causal", "masked"]:
    if requested != "auto":
        return requested  # type: ignore[return-value]
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "MaskedLM" in archs or getattr(config, "model_type", "") in MASKED_TYPES:
        return "masked"
    return "causal"


def load(ref: ModelRef, *, trust_remote_code: bool = False, max_memory: dict[int | str, int] | None = None,
         offload_dir: str | None = None, runs_root: Path | None = None) -> LoadedModel:
    """Load a model and tokenizer (no caching; see :class:`~neurotrace.lab.model.weights.cache.ModelCache`).

    ``device='auto'`` places the layers with accelerate's ``device_map='auto'`` under ``max_memory``
    ({gpu index or 'cpu': bytes}); what fits nowhere goes to ``offload_dir`` on disk."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = resolve_device(ref.device)
    base_name, adapter_name = split(ref.model)
    adapter_src = locate(adapter_name) if adapter_name is not None else None
    source = resolve_source(base_name)
    _safetensors_only(source, ref.model)
    config = read_config(source, trust_remote_code)
    adapter = adapter_for(config)
    kind = detect_kind(config, ref.lm_kind)
    if kind != adapter.lm_kind:
        raise InputError("lm_kind", f"{ref.model!r} is a {adapter.lm_kind} LM ({adapter.family}), not {kind}",
                         fix=f"use lm_kind='{adapter.lm_kind}' or 'auto'")
    auto = AutoModelForCausalLM if kind == "causal" else AutoModelForMaskedLM
    dtype = DTYPES[ref.dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        placing = ({"device_map": "auto", "max_memory": max_memory, "offload_folder": offload_dir}
                   if ref.device == "auto" else {})
        model = auto.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code, **placing)
    except OSError as exc:
        raise NotFound("model", f"cannot load weights for {source!r}: {str(exc).splitlines()[0]}",
                       fix="pass a local directory with config.json + weights + tokenizer files") from exc
    edited = parse_edited(ref.model)
    extra = apply_delta(model, edited[0], edited[1], runs_root) if edited is not None else {}
    if adapter_src is not None:
        attach(model, base_name, adapter_src)
    if ref.device != "auto":
        model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    bridge = _boot_bridge(source, model, tokenizer, device, dtype, trust_remote_code) if ref.backend == "bridge" else None
    wrapper = _wrap_nnsight(model, tokenizer, kind) if ref.backend == "nnsight" else None
    nbytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]
                 if t.device.type != "meta")  # offloaded to disk: no memory
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(key=cache_key(ref), ref=ref, source=source, model=model, tokenizer=tokenizer,
                       adapter=adapter, lm_kind=kind, fingerprint=fingerprint(model), nbytes=nbytes, bridge=bridge, nnsight=wrapper,
                       provenance={**provenance(source), **extra,
                                   **({"adapter": adapter_src.record()} if adapter_src is not None else {})})


def _boot_bridge(source: str, model: nn.Module, tokenizer: Any, device: torch.device, dtype: torch.dtype,
                 trust_remote_code: bool) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    try:
        return TransformerBridge.boot_transformers(source, device=str(device), dtype=dtype, tokenizer=tokenizer,
                                                   hf_model=model, trust_remote_code=trust_remote_code)
    except (ValueError, NotImplementedError, KeyError) as exc:
        raise InputError("backend", f"TransformerLens's bridge does not support {source!r}: {exc}",
                         fix="use backend='hf'") from exc


def _wrap_nnsight(model: nn.Module, tokenizer: Any, kind: str) -> Any:
    """nnsight's wrapper around the already loaded transformers model (local execution)."""
    try:
        from nnsight.modeling.transformers import (
            TransformersModel,  # optional extra: only for backend='nnsight'
        )
    except ImportError as exc:
        raise InputError("backend", "the nnsight backend needs the nnsight package",
                         fix="pip install 'neurotrace[nnsight]' or use backend='hf'") from exc
    task = "fill-mask" if kind == "masked" else "text-generation"
    with warnings.catch_warnings():  # BERT's attention has a child named 'output': reached as E_output
        warnings.filterwarnings("ignore", message=".*which nnsight already serves.*", category=UserWarning)
        return TransformersModel(model, tokenizer=tokenizer, task=task)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _safetensors_only(source: str, shown: str) -> None:
    """A local model directory must hold safetensors weights: a pickle-only directory is refused with a reason
    (torch's weights_only loader would refuse it too, with nothing an agent can act on)."""
    folder = Path(source)
    if not folder.is_dir():
        return
    names = [p.name for p in folder.iterdir() if p.is_file()]
    if any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in names):
        return
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise InputError("model", f"{shown!r} holds its weights only as a pickle ({pickles[0]}); neurotrace reads "
                         "weights from safetensors only (a pickle can run code when loaded)",
                         fix="convert it once where you trust the file: AutoModel.from_pretrained(dir)."
                             "save_pretrained(dir, safe_serialization=True), then load the directory again")
