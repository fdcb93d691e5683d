"""The one place that turns lab errors into MCP resource errors: ``NotFound`` -> ``ResourceNotFoundError``."""

from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from neurotrace.lab.errors import LabError, NotFound


@contextmanager
def resource_faults() -> Iterator[None]:
    try:
        yield
    except NotFound as exc:
        raise ResourceNotFoundError(str(exc)) from exc
    except LabError as exc:
        raise ResourceError(str(exc)) from exc
