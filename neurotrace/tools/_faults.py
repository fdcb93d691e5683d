"""The one place that turns lab errors into MCP errors.

Tools: :class:`~neurotrace.lab.errors.LabError` -> ``ToolError`` whose text names the field and the
fix ("trace: layers: layer 40 is out of range... Fix: ..."); resources have their own mapping
(:mod:`neurotrace.resources._faults`). Any other exception of a kind a request can provoke (overflow, a torch RuntimeError, MemoryError ...)
becomes a ToolError naming its type and a cleaned one-line message (no absolute paths), and goes to
the server log with its traceback.
"""

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import ValidationError

from neurotrace.lab.errors import Cancelled, LabError, validation_message
from neurotrace.lab.runs.manifest import is_disk_full

log = logging.getLogger("neurotrace.server")
PATH_RE = re.compile(r"(?:~|/)[^\s'\"]*/[^\s'\"]*")
MAX_ECHO_CHARS = 100        # a quoted value longer than this is cut when echoed in an error
MAX_ERROR_CHARS = 2000
# a quoted value opens after a space, '=', a bracket, ':' or ',' (never right after a word: that quote closes a
# shorter value) and starts with a non-space; so the stretch between two short quoted values is never cut
_OPEN = r"(?:^|(?<=[\s=(\[{:,]))"
QUOTED_RE = re.compile(_OPEN + "'(?=\\S)([^'\n]{N,})'|" .replace("N", str(MAX_ECHO_CHARS + 1))
                       + _OPEN + '"(?=\\S)([^"\n]{N,})"'.replace("N", str(MAX_ECHO_CHARS + 1)))


def _homes() -> list[str]:
    homes = {os.path.expanduser("~"), os.path.realpath(os.path.expanduser("~"))}
    return sorted((h for h in homes if h not in ("", "/", "~")), key=len, reverse=True)


def scrub(text: str) -> str:
    """An error text for an agent: the home directory shown as ``~``, long echoed values cut, bounded."""
    for home in _homes():
        text = re.sub(re.escape(home) + r"(?![\w-]|\.\w)", "~", text)

    def cut(m: re.Match[str]) -> str:
        value, quote = (m.group(1), "'") if m.group(1) is not None else (m.group(2), '"')
        return f"{quote}{value[:60]}{quote}... ({len(value):,} characters)"

    text = QUOTED_RE.sub(cut, text)
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " ... (cut)"


@contextmanager
def tool_faults() -> Iterator[None]:
    try:
        yield
    except ToolError:
        raise
    except LabError as exc:
        raise ToolError(scrub(str(exc))) from exc
    except ValidationError as exc:
        raise ToolError(scrub(f"invalid request: {validation_message(exc)}")) from exc
    except Cancelled as exc:
        raise ToolError(scrub(f"cancelled: {exc}")) from exc
    except MemoryError as exc:
        raise ToolError("request: the job ran out of memory. Fix: reduce the request's sizes (prompts, layers, "
                        "positions, d_sae, batch sizes) or raise NEUROTRACE_MEMORY_BUDGET on a bigger machine") from exc
    except (OverflowError, RecursionError, ArithmeticError, RuntimeError, TypeError, ValueError, KeyError,
            IndexError, OSError) as exc:
        if is_disk_full(exc):  # outside a run (its own error names the runs directory): still not the request's
            raise ToolError("runs_dir: disk full: no room left to write this call's files. Fix: free space on the "
                            "runs directory's disk or point NEUROTRACE_RUNS_DIR at a disk with room") from exc
        log.exception("unexpected %s in a tool", type(exc).__name__)
        raise ToolError(scrub(f"request: the experiment failed with {type(exc).__name__}: {_clean(exc)}. Fix: "
                              "check the request's values against the input schema (ranges, lengths, devices); if "
                              "they are valid this is a bug: report it with the run's request.json")) from exc
    except Exception as exc:  # anything else still gets a message (never the SDK's bare "Error executing tool")
        log.exception("unexpected %s in a tool", type(exc).__name__)
        raise ToolError(scrub(f"request: the experiment failed with {type(exc).__name__}: {_clean(exc)}. Fix: "
                              "this is a bug: report it with the run's request.json")) from exc


def _clean(exc: BaseException, limit: int = 240) -> str:
    """An exception's text for an agent: one line, no absolute paths, bounded."""
    text = " ".join(str(exc).split())
    text = PATH_RE.sub(lambda m: "<path>/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)
    return text[:limit] + ("..." if len(text) > limit else "")
