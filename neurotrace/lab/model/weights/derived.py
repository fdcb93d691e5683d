"""Edited models: ``<base>@edit:<run_id>`` is the base model plus the weight delta an ``edit`` run stored.

The name is the whole identity: any tool given it loads the base (embedded, catalog, hub id or directory; an
edited model may itself be a base), then adds ``<runs>/<run_id>/arrays/delta.safetensors`` parameter by
parameter (names and shapes checked, the run must be complete and made on that base). The base model's cache
entry is never touched; the edited one is its own entry with its own fingerprint.
"""

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neurotrace.lab.errors import InputError, NotFound

MARK = "@edit:"
RUN_RE = re.compile(r"^[0-9]{8}T[0-9]{6}(?:\d{6})?Z-edit-[0-9a-f]{8}$")
DELTA_FILE = ("arrays", "delta.safetensors")


def edited_name(base: str, run_id: str) -> str:
    return f"{base}{MARK}{run_id}"


def parse_edited(name: str) -> tuple[str, str] | None:
    """(base, run_id) of an edited model's name, None for any other name; a malformed run id is an error."""
    if MARK not in name:
        return None
    base, _, run_id = name.rpartition(MARK)
    if not base or not RUN_RE.match(run_id):
        raise InputError("model", f"{name!r} is not an edited model's name", fix="use '<model>@edit:<edit run "
                         "id>' as an edit run's result names it")
    return base, run_id


def base_model(name: str) -> str:
    """The original model under any number of edits."""
    parsed = parse_edited(name)
    return name if parsed is None else base_model(parsed[0])


def apply_delta(model: nn.Module, base: str, run_id: str, runs_root: Path | None) -> dict[str, Any]:
    """Add edit run ``run_id``'s delta to ``model`` (the loaded ``base``) in place; returns provenance for the
    model's description."""
    from safetensors import safe_open  # heavy import, kept off the package's import path

    name = edited_name(base, run_id)
    if runs_root is None:
        raise NotFound("model", f"{name!r} names an edit run, which only a Lab's model cache can find",
                       fix="load it through a tool (the server's or Lab's cache), not load() directly")
    run_dir = Path(runs_root) / run_id
    try:
        status = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError):
        status = None
    path = run_dir.joinpath(*DELTA_FILE)
    if status != "complete" or not path.is_file() or path.is_symlink():
        raise NotFound("model", f"no complete edit run {run_id} with a weight delta in this runs directory",
                       fix="use an edited model name from an edit run's result (edited_model)")
    with safe_open(str(path), framework="pt") as fh:
        if (fh.metadata() or {}).get("base_model") != base:
            raise InputError("model", f"edit run {run_id} edited {(fh.metadata() or {}).get('base_model')!r}, "
                             f"not {base!r}", fix="use the edited model name exactly as the edit run gave it")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for key in fh.keys():
                delta = fh.get_tensor(key)
                p = params.get(key)
                if p is None or p.shape != delta.shape:
                    raise InputError("model", f"edit run {run_id}'s delta {key!r} does not fit {base!r}",
                                     fix="edit the model again")
                p += delta.to(p.device, p.dtype)
    return {"edited_from": base, "edit_run": run_id}
