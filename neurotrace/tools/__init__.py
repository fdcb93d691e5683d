"""Thin MCP faces, one module per tool (``models`` holds the three cache tools).

A tool module: an ``async def name(request: XRequest, ctx: Context) -> Annotated[CallToolResult, XResult]``
whose docstring's first line says what it answers, returning ``await run_in_lab(ctx, run_x, request)``,
and ``register(server)`` adding it with honest ``ToolAnnotations``. :data:`MODULES` is the explicit list.
"""

from neurotrace.tools import (
    attention,
    attribute,
    benchmark,
    capture,
    clamp_sweep,
    compare,
    find_neurons,
    fit_sae,
    generate_facts,
    intervene,
    logit_lens,
    models,
    patch,
    plot,
    probe,
    run_status,
    steer,
    trace,
)

MODULES = (models, generate_facts, trace, compare, plot, clamp_sweep, capture, fit_sae, intervene, benchmark,
           find_neurons, probe, steer, logit_lens, attention, attribute, patch, run_status)


def register(server) -> None:
    """Add every tool of :data:`MODULES` to ``server``."""
    for module in MODULES:
        module.register(server)
