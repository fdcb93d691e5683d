"""Thin MCP faces, one module per tool. Each module defines ``register(server)``.

A tool module: an ``async def name(request: XRequest, ctx: Context) -> Annotated[CallToolResult, XResult]``
whose docstring's first line says what it answers, returning ``await run_in_lab(ctx, run_x, request)``.
"""

import importlib

TOOL_MODULES: list[str] = [
    "neurotrace.tools.trace",
    "neurotrace.tools.models",
    "neurotrace.tools.clamp_sweep",
    "neurotrace.tools.generate_facts",
    "neurotrace.tools.capture",
    "neurotrace.tools.fit_sae",
    "neurotrace.tools.intervene",
    "neurotrace.tools.plot",
]


def register_all(server) -> None:
    for name in TOOL_MODULES:
        importlib.import_module(name).register(server)
