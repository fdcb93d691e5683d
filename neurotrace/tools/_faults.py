"""The one place that turns lab errors into MCP errors.

Tools: :class:`~neurotrace.lab.errors.LabError` -> ``ToolError`` whose text names the field and the
fix ("trace: layers: layer 40 is out of range... Fix: ..."). Resources: ``NotFound`` ->
``ResourceNotFoundError``. Anything else is a crash and reaches the agent as the SDK's generic error
(and the server log, with its traceback).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, get_type_hints

from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from pydantic import BaseModel, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

from neurotrace.lab.errors import Cancelled, LabError, NotFound


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "request"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


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


@contextmanager
def resource_faults() -> Iterator[None]:
    try:
        yield
    except NotFound as exc:
        raise ResourceNotFoundError(str(exc)) from exc
    except LabError as exc:
        raise ResourceError(str(exc)) from exc


def _lab_errors_as_validation(value: Any, handler: Callable[[Any], Any]) -> Any:
    """Request validators raise InputError (with field and fix); during argument validation that must
    surface as a validation error (the agent sees it) rather than a crash (the agent sees nothing)."""
    try:
        return handler(value)
    except LabError as exc:
        raise PydanticCustomError("lab_error", "{message}", {"message": str(exc)}) from exc


def checked_request(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a tool's pydantic ``request`` parameter so lab errors in its validators reach the agent."""
    hints = get_type_hints(fn, include_extras=True)
    ann = hints.get("request")
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        fn.__annotations__["request"] = Annotated[ann, WrapValidator(_lab_errors_as_validation)]
    return fn
