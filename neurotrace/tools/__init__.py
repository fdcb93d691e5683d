"""Thin MCP faces, one module per tool, registered from the one list of experiments.

A tool module ``tools/<name>.py``: an ``async def <name>(request: XRequest, ctx: Context) ->
Annotated[CallToolResult, XResult]`` whose docstring's first line says what it answers, returning
``await run_in_lab(ctx, run_x, request)``. :func:`register` adds one face per declared experiment
(:data:`neurotrace.EXPERIMENTS`), its annotations from the entry's flags (``openWorldHint`` = it may
reach the hub), then the three non-experiment tools (``list_models``, ``release_model``, ``run_status``).
The face is found by name (``tools/<name>.py``, function ``<name>``): an experiment without one stops the
server at start-up, and a contract test checks that every ``tools/`` module is a declared face or a helper.
"""

import importlib
import importlib.util

from neurotrace import EXPERIMENTS
from neurotrace.tools import models, run_status
from neurotrace.tools._runner import EXPERIMENT, READ_ONLY


def face(name: str):
    """The face of the declared experiment ``name``: the function ``name`` of module ``tools/<name>.py``."""
    module = f"{__name__}.{name}"
    fn = getattr(importlib.import_module(module), name, None) if importlib.util.find_spec(module) else None
    if fn is None:
        raise RuntimeError(f"experiment {name!r} is declared but has no face: write tools/{name}.py with "
                           f"an async def {name}(request, ctx) (see docs/architecture.md)")
    return fn


def register(server) -> None:
    """Add every declared experiment's face, then the model-cache and run-status tools, to ``server``."""
    for experiment in EXPERIMENTS:
        annotations = EXPERIMENT.model_copy(update={"open_world_hint": experiment.reaches_hub})
        server.add_tool(face(experiment.name), annotations=annotations)
    server.add_tool(models.list_models, annotations=READ_ONLY)
    server.add_tool(models.release_model, annotations=EXPERIMENT)
    server.add_tool(run_status.run_status, annotations=READ_ONLY)
