"""Errors the lab raises. Each names the request field at fault and how to fix it.

The MCP layer (``neurotrace.tools._faults``) translates these into ``ToolError`` /
``ResourceNotFoundError`` in one place; the CLI prints them as ``field: message. Fix: fix``.

:class:`LabError` is a ``ValueError``, so one raised inside a pydantic validator becomes an ordinary
validation error; :func:`validation_message` turns any ``ValidationError`` into the same
``field: problem. Fix: ...`` form, without pydantic's input dumps or links.
"""

from typing import Any

from pydantic import ValidationError

MAX_ALLOWED_SHOWN = 12  # literal choices listed in a validation message


class LabError(ValueError):
    """Base class: every lab error carries a field, a message and a fix."""

    def __init__(self, field: str, message: str, fix: str = "") -> None:
        self.field = field
        self.message = message
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}"
        if self.fix:
            text += f". Fix: {self.fix}"
        return text


class InputError(LabError):
    """The request is invalid (bad value, out of range, inconsistent fields)."""


class NotFound(LabError):
    """A model, run, artifact or resource does not exist."""


class OverBudget(LabError):
    """Loading a model would exceed the configured memory budget."""


class DiskFull(LabError):
    """The runs directory's disk (or the file-size limit) has no room left for a run's files."""


class Cancelled(Exception):
    """The caller cancelled the run; raised between units of work."""


def lab_error_in(exc: ValidationError) -> "LabError | None":
    """The first :class:`LabError` a validator raised inside ``exc`` (pydantic wraps ValueErrors)."""
    for err in exc.errors(include_url=False, include_input=False):
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, LabError):
            return cause
    return None


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = str(part)
        elif "[" in str(part) or "-" in str(part) or str(part)[:1].isupper():
            continue  # pydantic's union-member tags ("function-after[...]", "NoiseCorruption")
        else:
            out += f".{part}"
    return out or "request"


#: request fields that were renamed (old name -> new name), so an agent using the old one is told the new
RENAMED_FIELDS = {"kinds": "components"}


def _one(err: dict[str, Any]) -> str:
    loc = _loc(tuple(err.get("loc") or ()))
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, LabError):
        return str(cause) if loc == "request" or str(cause).startswith(loc) else f"{loc}.{cause}"
    kind, msg = err.get("type", ""), err.get("msg", "invalid value")
    msg = msg.removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        renamed = RENAMED_FIELDS.get(loc.rsplit(".", 1)[-1])
        if renamed:
            return f"{loc}: unknown field (renamed). Fix: call it {renamed}"
        return f"{loc}: unknown field. Fix: remove it (see the tool's input schema for the accepted fields)"
    if kind == "missing":
        return f"{loc}: required field is missing. Fix: give {loc}"
    if kind == "literal_error" and "expected" in ctx:
        return f"{loc}: {msg.split(' Input')[0]}. Fix: use one of {ctx['expected']}"
    if "le" in ctx or "ge" in ctx or "lt" in ctx or "gt" in ctx:
        return f"{loc}: {msg}. Fix: give a value in the allowed range"
    return f"{loc}: {msg}"


def validation_message(exc: ValidationError, limit: int = MAX_ALLOWED_SHOWN) -> str:
    """``field: problem. Fix: ...`` for each error (at most ``limit``), never echoing the input value."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = list(dict.fromkeys(_one(e) for e in errors))
    more = f" (+{len(parts) - limit} more)" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more
