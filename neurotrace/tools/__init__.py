"""Thin MCP faces, one module per tool. Each module defines ``register(server)``.

A tool module: an ``async def name(request: XRequest, ctx: Context) -> Annotated[CallToolResult, XResult]``
whose docstring's first line says what it answers, returning ``await run_in_lab(ctx, run_x, request)``.
"""

import importlib

TOOL_MODULES: list[str] = [
    "neurotrace.tools.benchmark",
    "neurotrace.tools.trace",
    "neurotrace.tools.models",
    "neurotrace.tools.clamp_sweep",
    "neurotrace.tools.generate_facts",
    "neurotrace.tools.capture",
    "neurotrace.tools.fit_sae",
    "neurotrace.tools.intervene",
    "neurotrace.tools.plot",
]


class _CheckedRegistrar:
    """Passes add_tool through, wrapping each tool's request model with the lab-error translation."""

    def __init__(self, server) -> None:
        self._server = server

    def add_tool(self, fn, *args, **kwargs):
        from neurotrace.tools._faults import checked_request

        return self._server.add_tool(checked_request(fn), *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._server, name)


def register_all(server) -> None:
    registrar = _CheckedRegistrar(server)
    for name in TOOL_MODULES:
        importlib.import_module(name).register(registrar)
