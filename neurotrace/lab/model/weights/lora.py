"""Tuned pairs: a base model plus a LoRA adapter, one load serving both sides.

A model reference names a base and an adapter as ``BASE+ADAPTER``: a shipped adapter by name
(``gemma-3-270m+eiffel-rome-lora``; the folders in ``neurotrace/data/adapters/``) or a path
(``gemma-3-270m+/data/my-adapter``); request fields typed :data:`ModelName` also take the object
``{"base": ..., "adapter": ...}``. An adapter is a folder holding ``adapter_model.safetensors`` and
``adapter_config.json`` (our layout: ``base``, ``rank``, ``alpha``, ``target_modules``, ``layers``; or
peft's: ``r``, ``lora_alpha``, ``target_modules``, ``layers_to_transform``,
``base_model_name_or_path``), or the ``.safetensors`` file itself with the config beside it. Weights
come only from safetensors: a ``.bin``/``.pt`` adapter is refused.

:func:`attach` checks the adapter against the loaded base (named base, module paths, matrix shapes:
:class:`AdapterMismatch` names both), injects LoRA layers in place with peft (module names stay, so
every site and hook works unchanged) and loads the matrices. :func:`adapter_state` switches it on or
off for a block (peft's per-layer disable); the adapter is on outside such a block.
"""

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BeforeValidator
from torch import nn

from neurotrace.lab.errors import InputError, NotFound

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,80}$")


class AdapterMismatch(InputError):
    """The adapter was trained for another base (name, module paths or shapes differ)."""


def _from_object(value: Any) -> Any:
    """``{"base": B, "adapter": A}`` -> ``"B+A"``; anything else unchanged."""
    if isinstance(value, dict) and set(value) == {"base", "adapter"}:
        base, adapter = value["base"], value["adapter"]
        if not isinstance(base, str) or not isinstance(adapter, str) or not base or not adapter:
            raise InputError("model", "a tuned-pair reference needs string 'base' and 'adapter'",
                             fix='give {"base": "gemma-3-270m", "adapter": "eiffel-rome-lora"}')
        return f"{base}+{adapter}"
    return value


#: A request's model field: a name, or a base plus an adapter (``"B+A"`` or ``{"base": B, "adapter": A}``).
ModelName = Annotated[str, BeforeValidator(_from_object)]


def shipped_adapters() -> dict[str, Path]:
    """Shipped adapter name -> its folder (those with weights present)."""
    root = Path(str(resources.files("neurotrace") / "data" / "adapters"))
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / ADAPTER_FILE).is_file()}


def shipped_catalog() -> dict[str, dict[str, Any]]:
    """Each shipped adapter's card (base, recipe, accuracy) under its pair name ``base+adapter``."""
    out = {}
    for name, folder in shipped_adapters().items():
        card = json.loads((folder / "card.json").read_text(encoding="utf-8")) if (folder / "card.json").is_file() else {}
        base = card.get("base") or _read_config(folder / CONFIG_FILE).get("base", "?")
        out[f"{base}+{name}"] = {"description": f"LoRA adapter {name} on {base}", "card": card}
    return out


def split(model: str) -> tuple[str, str | None]:
    """``"B+A"`` -> (B, A); a plain name or an existing path containing '+' -> (model, None)."""
    if "+" not in model or Path(model).expanduser().exists():
        return model, None
    base, _, adapter = model.partition("+")
    if not base or not adapter:
        raise InputError("model", f"{model!r} is not BASE+ADAPTER", fix="e.g. 'gemma-3-270m+eiffel-rome-lora'")
    return base, adapter


@dataclass(frozen=True)
class AdapterSource:
    """A located adapter: its weights file, config and identity."""

    name: str
    weights: Path
    config: dict[str, Any]
    sha256: str

    @property
    def base(self) -> str | None:
        return self.config.get("base") or self.config.get("base_model_name_or_path")

    def record(self) -> dict[str, Any]:
        """What the run manifest records."""
        return {"name": self.name, "sha256": self.sha256, "base": self.base, "kind": "lora",
                "rank": self.config.get("rank", self.config.get("r")),
                "target_modules": self.config.get("target_modules")}


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError("model", f"the adapter's {CONFIG_FILE} is missing or not JSON",
                         fix=f"put the adapter's {CONFIG_FILE} beside {ADAPTER_FILE}") from exc
    if not isinstance(data, dict):
        raise InputError("model", f"the adapter's {CONFIG_FILE} is not a JSON object", fix="rewrite it")
    return data


def locate(adapter: str) -> AdapterSource:
    """Find adapter ``adapter`` (shipped name, folder or .safetensors file); refuse non-safetensors."""
    shipped = shipped_adapters()
    if adapter in shipped:
        folder, name = shipped[adapter], adapter
        weights = folder / ADAPTER_FILE
    else:
        path = Path(adapter).expanduser()
        if path.suffix.lower() in UNSAFE_SUFFIXES:
            raise InputError("model", f"adapter weights must be safetensors, not {path.suffix}",
                             fix="convert the adapter with safetensors.torch.save_file and pass the .safetensors file")
        if path.is_file() and path.suffix == ".safetensors":
            weights, folder = path, path.parent
        elif path.is_dir():
            weights, folder = path / ADAPTER_FILE, path
            if not weights.is_file():
                unsafe = [p.name for p in path.iterdir() if p.suffix.lower() in UNSAFE_SUFFIXES]
                raise InputError("model", f"the adapter folder has no {ADAPTER_FILE}"
                                 + (" (only pickled weights, which are refused)" if unsafe else ""),
                                 fix="save the adapter as safetensors (peft: save_pretrained(..., "
                                     "safe_serialization=True))")
        else:
            known = ", ".join(shipped) or "none installed"
            raise NotFound("model", f"no adapter named or at {adapter!r} (shipped: {known})",
                           fix="use a shipped adapter name or the path of an adapter folder/.safetensors file")
        name = folder.name if weights.name == ADAPTER_FILE else weights.stem
    config = _read_config(folder / CONFIG_FILE)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    return AdapterSource(name=name, weights=weights, config=config, sha256=sha)


def _strip(key: str) -> str:
    """peft's saved keys (``base_model.model.X.lora_A.weight``) and ours (``X.lora_A.weight``) -> ours."""
    return key.removeprefix("base_model.model.")


def _load_weights(src: AdapterSource) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(src.weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError("model", f"adapter {src.name!r} is not a readable safetensors file",
                         fix="pass a .safetensors adapter written by safetensors/peft") from exc
    return {_strip(k): v for k, v in tensors.items()}


def _check(src: AdapterSource, base_name: str, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Raise :class:`AdapterMismatch` naming both when the adapter does not fit the loaded base."""
    declared = src.base
    if declared and "/" not in declared and declared != base_name and not Path(declared).is_absolute():
        raise AdapterMismatch("model", f"adapter {src.name!r} was trained on {declared!r}, not {base_name!r}",
                              fix=f"use '{declared}+{src.name}' or an adapter trained on {base_name}")
    modules = dict(model.named_modules())
    for key, tensor in tensors.items():
        path, _, part = key.rpartition(".lora_")
        target = modules.get(path)
        if target is None or not hasattr(target, "weight") or tensor.ndim != 2:
            raise AdapterMismatch("model", f"adapter {src.name!r} has module {path!r}, which base {base_name!r} "
                                  f"({type(model).__name__}) lacks", fix="use the base the adapter was trained on")
        out_f, in_f = target.weight.shape[:2]
        if type(target).__name__ == "Conv1D":
            in_f, out_f = out_f, in_f
        want = tensor.shape[1] if part.startswith("A") else tensor.shape[0]
        have = in_f if part.startswith("A") else out_f
        if want != have:
            raise AdapterMismatch("model", f"adapter {src.name!r} expects width {want} at {path!r}, base "
                                  f"{base_name!r} has {have}", fix="use the base the adapter was trained on")


def attach(model: nn.Module, base_name: str, src: AdapterSource) -> None:
    """Check and inject ``src`` into ``model`` in place (frozen, on)."""
    from peft import LoraConfig, inject_adapter_in_model

    tensors = _load_weights(src)
    if not tensors or not all(".lora_A." in k or ".lora_B." in k for k in tensors):
        raise InputError("model", f"adapter {src.name!r} holds no LoRA matrices (lora_A/lora_B)",
                         fix="pass a LoRA adapter")
    _check(src, base_name, model, tensors)
    c = src.config
    rank = int(c.get("rank", c.get("r", 0)) or next(v.shape[0] for k, v in tensors.items() if ".lora_A." in k))
    targets = sorted({k.rpartition(".lora_")[0] for k in tensors})
    config = LoraConfig(r=rank, lora_alpha=float(c.get("alpha", c.get("lora_alpha", rank))), lora_dropout=0.0,
                        target_modules=targets, bias="none")
    inject_adapter_in_model(config, model)
    state = {k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
             for k, v in tensors.items()}
    missing, unexpected = [], []
    params = dict(model.named_parameters())
    for key, value in state.items():
        if key not in params:
            unexpected.append(key)
            continue
        with torch.no_grad():
            params[key].copy_(value.to(params[key].dtype))
    missing = [k for k in params if ".lora_" in k and k not in state]
    if unexpected or missing:
        raise AdapterMismatch("model", f"adapter {src.name!r} does not fit base {base_name!r} "
                              f"({len(unexpected)} unexpected, {len(missing)} missing LoRA matrices)",
                              fix="use the base the adapter was trained on")
    for p in model.parameters():
        p.requires_grad_(False)


def has_adapter(model: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def _set(model: nn.Module, on: bool) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(on)


@contextmanager
def adapter_state(model: nn.Module, on: bool) -> Iterator[None]:
    """The block runs with the adapter on or off; it is on again afterwards."""
    if not has_adapter(model):
        if on:
            raise InputError("model", "this model has no adapter to switch on", fix="name it as BASE+ADAPTER")
        yield
        return
    _set(model, on)
    try:
        yield
    finally:
        _set(model, True)


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise InputError("adapter", f"{name!r} is not an adapter name", fix="lowercase letters, digits, . _ -")
    return name
