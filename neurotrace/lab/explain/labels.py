"""Names of units, stored with what they name, so any tool can show a feature's name and score beside its index.

One JSON file per dictionary (keyed by its weights' sha256) or per model's neurons (keyed by the model's
fingerprint) under ``<runs dir>/labels/``: ``{index: Label}``, the latest scored explanation of each unit. Written
whole through a temp file and a rename, under a lock.
"""

import json
import re
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict

from neurotrace.lab.runs import atomic_write_text

LABELS_DIR = "labels"
_LOCK = threading.Lock()
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unit: str
    explanation: str
    verdict: str
    detection: float
    fuzzing: float
    run_id: str


def unit_key(model_fingerprint: str, dictionary: Any = None) -> str:
    """``dict-<sha256 prefix>`` for a dictionary's features, ``neurons-<fingerprint prefix>`` for a model's."""
    if dictionary is not None:
        return "dict-" + _SAFE.sub("", str(dictionary.cfg.sha256))[:24]
    return "neurons-" + _SAFE.sub("", model_fingerprint)[:24]


def _path(lab: Any, key: str):
    return lab.store.root / LABELS_DIR / f"{_SAFE.sub('', key)}.json"


def read_labels(lab: Any, key: str) -> dict[str, Label]:
    """Every stored label under ``key`` ({} when none)."""
    path = _path(lab, key)
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {k: Label.model_validate(v) for k, v in raw.items()}
    except (OSError, ValueError):
        return {}


def save_label(lab: Any, key: str, index: str, label: Label) -> None:
    if not key:
        return
    with _LOCK:
        labels = read_labels(lab, key)
        labels[index] = label
        path = _path(lab, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({k: v.model_dump() for k, v in labels.items()}, indent=1) + "\n")


def dictionary_labels(lab: Any, dictionary: Any) -> dict[str, Label]:
    """The labels of a loaded dictionary's features, by feature index as a string."""
    return read_labels(lab, unit_key("", dictionary))
