"""Prompt grids: prompts tagged with a core id, a type and a level, inline or from a file.

A BCR-style grid crosses a few *core* prompts with prompt *types* (e.g. question / instruction /
continuation) and difficulty *levels*, so that recovery rates can be read per core, type or level.

File formats (chosen by extension; anything else is sniffed from its first character):

* ``.jsonl``: one JSON object per line, ``{"prompt": "...", "core_id": "c1", "type": "question",
  "level": "2"}``; only ``prompt`` is required; other keys are ignored; blank lines are skipped.
* ``.csv`` / ``.tsv``: a header row naming the columns; ``prompt`` is required, ``core_id``,
  ``type`` and ``level`` are optional; other columns are ignored. Quote fields that contain the
  delimiter or newlines (standard CSV quoting).

Missing tags default to ``core_id = "p<row>"`` (0-based row in the combined list), ``type = ""``,
``level = ""``.
"""

import csv
import io
import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.errors import InputError
from neurotrace.lab.inputs import InputPolicy

FIELD = "prompt_file"
FIX = ("give a .jsonl file of {\"prompt\": ..., \"core_id\": ..., \"type\": ..., \"level\": ...} objects, "
       "or a .csv/.tsv file with a header row containing a 'prompt' column")


class PromptItem(BaseModel):
    """One prompt with its grid coordinates."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt: Annotated[str, Field(min_length=1, description="The prompt text the model continues.")]
    core_id: str | None = Field(None, description="Which core prompt this is a variant of (default 'p<row>').")
    type: str | None = Field(None, description="Prompt type, e.g. 'question', 'instruction' (default '').")
    level: str | None = Field(None, description="Difficulty or grid level (default '').")


def _item(obj: dict, where: str) -> PromptItem:
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(FIELD, f"{where}: missing or empty 'prompt'", fix=FIX)
    tags = {k: (None if obj.get(k) in (None, "") else str(obj[k])) for k in ("core_id", "type", "level")}
    return PromptItem(prompt=prompt, **tags)


def _parse_jsonl(text: str, name: str) -> list[PromptItem]:
    items = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(FIELD, f"{name} line {lineno} is not valid JSON ({exc.msg})", fix=FIX) from exc
        if not isinstance(obj, dict):
            raise InputError(FIELD, f"{name} line {lineno} is not a JSON object", fix=FIX)
        items.append(_item(obj, f"{name} line {lineno}"))
    return items


def _parse_table(text: str, name: str, delimiter: str) -> list[PromptItem]:
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise InputError(FIELD, f"{name}'s header row cannot be read as CSV ({exc})", fix=FIX) from exc
    if "prompt" not in columns:
        raise InputError(FIELD, f"{name} has no 'prompt' column (its header has {len(columns)} columns)", fix=FIX)
    reader.fieldnames = columns
    items = []
    rowno = 1
    try:
        for rowno, row in enumerate(reader, start=2):
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue
            items.append(_item(row, f"{name} row {rowno}"))
    except csv.Error as exc:  # e.g. a field over csv's size limit, a NUL byte
        raise InputError(FIELD, f"{name} row {rowno + 1} cannot be read as CSV ({exc})",
                         fix=FIX + "; a single prompt is at most 128 KiB") from exc
    return items


def parse_prompt_text(text: str, name: str = "prompt file", fmt: str | None = None) -> list[PromptItem]:
    """Parse grid text; ``fmt`` is 'jsonl', 'csv' or 'tsv' (sniffed when None)."""
    if fmt is None:
        first = text.lstrip()[:1]
        header = text.lstrip().split("\n", 1)[0]
        fmt = "jsonl" if first == "{" else ("tsv" if "\t" in header else "csv")
    if fmt == "jsonl":
        items = _parse_jsonl(text, name)
    else:
        items = _parse_table(text, name, "\t" if fmt == "tsv" else ",")
    if not items:
        raise InputError(FIELD, f"{name} holds no prompts", fix=FIX)
    return items


def read_prompt_file(path: str, policy: InputPolicy | None = None) -> list[PromptItem]:
    """Read a prompt-grid file (see the module docstring for the formats).

    With a ``policy`` (always, from a server or CLI request) only the files it allows are read; without
    one (library use) any readable file is. Errors never quote the file's content."""
    if policy is not None:
        text, name = policy.read_text(path, FIELD)
    else:
        name, text = Path(path).expanduser().name, _read_any(path)
    suffix = Path(name).suffix.lower()
    fmt = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(suffix)
    return parse_prompt_text(text, name, fmt)


def _read_any(path: str) -> str:
    file = Path(path).expanduser()
    try:
        return file.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise InputError(FIELD, f"no file named {file.name!r}", fix="check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(FIELD, f"cannot read {file.name!r} ({type(exc).__name__})",
                         fix="give a readable UTF-8 text file") from exc


def resolve_prompts(prompts: list[str | PromptItem], prompt_file: str | None,
                    policy: InputPolicy | None = None) -> list[PromptItem]:
    """Inline prompts then file prompts, with default tags filled in; at least one is required."""
    for i, p in enumerate(prompts):
        if not (p.prompt if isinstance(p, PromptItem) else p).strip():
            raise InputError("prompts", f"prompt {i} is empty", fix="remove it or give it some text")
    items = [p if isinstance(p, PromptItem) else PromptItem(prompt=p) for p in prompts]
    if prompt_file:
        items += read_prompt_file(prompt_file, policy)
    if not items:
        raise InputError("prompts", "no prompts given", fix="pass `prompts` (strings or {prompt, core_id, type, "
                         "level} objects) or a `prompt_file`")
    return [PromptItem(prompt=p.prompt, core_id=p.core_id if p.core_id is not None else f"p{i}",
                       type=p.type or "", level=p.level or "") for i, p in enumerate(items)]
