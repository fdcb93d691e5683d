"""Errors the lab raises. Each names the request field at fault and how to fix it.

The MCP layer (``neurotrace.tools._faults``) translates these into ``ToolError`` /
``ResourceNotFoundError`` in one place; the CLI prints them as ``field: message. Fix: fix``.
"""


class LabError(Exception):
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


class Cancelled(Exception):
    """The caller cancelled the run; raised between units of work."""
