"""Where a model's weights live, and per-device memory accounting for the model cache.

A placement is a device name: ``cpu``, ``cuda:N``, ``mps`` or ``disk`` (accelerate's offload folder,
which holds no memory). A device-mapped model (``device='auto'``) is placed by accelerate's
``hf_device_map`` ({module name: GPU index | 'cpu' | 'disk'}; a tensor belongs to the longest module
name that prefixes it), any other model by its tensors' devices. The accounting is plain data
({device: bytes}), so it is tested with fake maps as well as with an offloaded tiny model.
"""

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from torch import Tensor, nn

from neurotrace.lab.errors import OverBudget

DISK = "disk"


def placement_name(placement: int | str) -> str:
    """accelerate's placement (GPU index, 'cpu', 'disk', 'cuda:1', 'mps') as a device name."""
    if isinstance(placement, int):
        return f"cuda:{placement}"
    return "cuda:0" if placement == "cuda" else str(placement)


def tensor_placements(model: nn.Module) -> dict[str, tuple[str, int]]:
    """{parameter or buffer name: (device name, bytes)} for every tensor of ``model`` (shared ones once)."""
    mapped = getattr(model, "hf_device_map", None) or {}
    names = sorted(mapped, key=len, reverse=True)
    out: dict[str, tuple[str, int]] = {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        owner = next((m for m in names if not m or name == m or name.startswith(m + ".")), None)
        where = placement_name(mapped[owner]) if owner is not None else _device_name(t.device)
        if where == DISK and t.device.type != "meta":   # a buffer accelerate keeps in memory
            where = _device_name(t.device)
        out[name] = (where, t.numel() * t.element_size())
    return out


def _device_name(device) -> str:  # a tensor's device; a meta tensor outside a device map is on disk
    if device.type == "meta":
        return DISK
    return f"{device.type}:{device.index or 0}" if device.type == "cuda" else device.type


def device_bytes(model: nn.Module) -> dict[str, int]:
    """{device name: bytes of weights placed there}, devices in first-use order (disk included)."""
    out: dict[str, int] = {}
    for where, nbytes in tensor_placements(model).values():
        out[where] = out.get(where, 0) + nbytes
    return out


def layer_placement(model: nn.Module, blocks: str, n_layers: int) -> dict[str, str]:
    """{device name: compact layer ranges ('0-5,8')} for the blocks under module path ``blocks``."""
    placed = tensor_placements(model)
    layers: dict[str, list[int]] = {}
    for layer in range(n_layers):
        prefix = f"{blocks}.{layer}."
        for where in dict.fromkeys(w for name, (w, _) in placed.items() if name.startswith(prefix)):
            layers.setdefault(where, []).append(layer)
    return {where: compact(indices) for where, indices in layers.items()}


def compact(indices: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8'."""
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)


def in_memory(per_device: Mapping[str, int]) -> int:
    """Bytes held in memory (every device but disk)."""
    return sum(n for where, n in per_device.items() if where != DISK)


def used_by_device(models: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """{device: bytes} summed over the loaded models' per-device bytes."""
    used: dict[str, int] = {}
    for per_device in models.values():
        for where, n in per_device.items():
            used[where] = used.get(where, 0) + n
    return used


def plan_admission(name: str, new: Mapping[str, int], loaded: "OrderedDict[str, Mapping[str, int]]",
                   leased: set[str], budgets: Mapping[str, int | None]) -> list[str]:
    """The least-recently-used models (keys of ``loaded``, oldest first) to evict so that ``new`` fits
    every device's budget ({device: bytes or None for no limit}). Raises :class:`OverBudget` naming the
    device when ``new`` alone is over it, or when the models in use leave no room there."""
    evict: list[str] = []
    for where, need in new.items():
        budget = budgets.get(where)
        if where == DISK or budget is None or need == 0:
            continue
        if need > budget:
            raise OverBudget("model", f"{name!r} needs {_mib(need)} on {where}, more than its whole memory "
                             f"budget of {_mib(budget)} there", fix=_fix(where))
        used = sum(b.get(where, 0) for k, b in loaded.items() if k not in evict)
        for key in [k for k in loaded if k not in evict and k not in leased and loaded[k].get(where, 0)]:
            if used + need <= budget:
                break
            evict.append(key)
            used -= loaded[key].get(where, 0)
        if used + need > budget:
            raise OverBudget("model", f"no room for {name!r} on {where}: it needs {_mib(need)}, and the models "
                             f"in use hold {_mib(used)} of its {_mib(budget)} budget",
                             fix="wait for running experiments to finish, release a model (release_model), or "
                                 + _fix(where))
    return evict


def _fix(where: str) -> str:
    if where.startswith("cuda"):
        return ("raise NEUROTRACE_GPU_MEMORY_BUDGET, use a smaller dtype, or load with device='auto' to spread "
                "the layers over the GPUs, host memory and disk")
    return "raise NEUROTRACE_MEMORY_BUDGET / --memory-budget, use a smaller dtype, or load with device='auto'"


def _mib(n: int) -> str:
    if n < 2**20:
        return f"{n / 2**10:.0f} KiB"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


@contextmanager
def materialised(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with its own weights in memory for the block: an offloaded module (device_map; its
    weights are meta tensors between forwards) gets them from accelerate's hook, others are as they are.
    Tensors read inside the block stay valid after it only if copied (``.clone()``)."""
    if not any(p.device.type == "meta" for p in module.parameters(recurse=False)) or \
            getattr(module, "_hf_hook", None) is None:
        yield module
        return
    from accelerate.utils import align_module_device  # only a dispatched model has offloaded weights

    with align_module_device(module):
        yield module


def offloaded_tensor(model: nn.Module, name: str) -> Tensor | None:
    """The stored value of state-dict entry ``name`` of a device-mapped model whose tensor is offloaded
    (a meta tensor between forwards): read from the weights map of the accelerate hook that loads it."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        try:
            module = model.get_submodule(".".join(parts[:cut]))
        except AttributeError:
            continue
        hook = getattr(module, "_hf_hook", None)
        for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
            weights = getattr(h, "weights_map", None)
            if weights is not None and ".".join(parts[cut:]) in weights:
                return weights[".".join(parts[cut:])]
    return None
