"""The one place that turns lab errors into MCP errors.

Tools: :class:`~neurotrace.lab.errors.LabError` -> ``ToolError`` whose text names the field and the
fix ("trace: layers: layer 40 is out of range... Fix: ..."); resources have their own mapping
(:mod:`neurotrace.resources._faults`). Any other exception of a kind a request can provoke (overflow, a torch RuntimeError, MemoryError ...)
becomes a ToolError naming its type and a cleaned one-line message (no absolute paths), and goes to
the server log with its traceback.
"""

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import ValidationError

from neurotrace.lab.errors import Cancelled, LabError, validation_message

log = logging.getLogger("neurotrace.server")
PATH_RE = re.compile(r"(?:~|/)[^\s'\"]*/[^\s'\"]*")


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
    except MemoryError as exc:
        raise ToolError("request: the job ran out of memory. Fix: reduce the request's sizes (prompts, layers, "
                        "positions, d_sae, batch sizes) or raise NEUROTRACE_MEMORY_BUDGET on a bigger machine") from exc
    except (OverflowError, RecursionError, ArithmeticError, RuntimeError, TypeError, ValueError, KeyError,
            IndexError, OSError) as exc:
        log.exception("unexpected %s in a tool", type(exc).__name__)
        raise ToolError(f"request: the experiment failed with {type(exc).__name__}: {_clean(exc)}. Fix: check "
                        "the request's values against the input schema (ranges, lengths, devices); if they are "
                        "valid this is a bug: report it with the run's request.json") from exc


def _clean(exc: BaseException, limit: int = 240) -> str:
    """An exception's text for an agent: one line, no absolute paths, bounded."""
    text = " ".join(str(exc).split())
    text = PATH_RE.sub(lambda m: "<path>/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)
    return text[:limit] + ("..." if len(text) > limit else "")
