"""The one place that turns lab errors into MCP errors.

Tools: :class:`~neurotrace.lab.errors.LabError` -> ``ToolError`` whose text names the field and the
fix ("trace: layers: layer 40 is out of range... Fix: ..."); resources have their own mapping
(:mod:`neurotrace.resources._faults`). Anything else is a crash and reaches the agent as the SDK's generic error
(and the server log, with its traceback).
"""

from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import ValidationError

from neurotrace.lab.errors import Cancelled, LabError, validation_message


@contextmanager
def tool_faults() -> Iterator[None]:
    try:
        yield
    except LabError as exc:
        raise ToolError(str(exc)) from exc
    except ValidationError as exc:
        raise ToolError(f"invalid request: {validation_message(exc)}") from exc
    except Cancelled as exc:
        raise ToolError(f"cancelled: {exc}") from exc
