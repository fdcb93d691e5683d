"""Thin MCP faces, one module per tool, registered from the one list of experiments.

A tool module ``tools/<name>.py``: an ``async def <name>(request: XRequest, ctx: Context) ->
Annotated[CallToolResult, XResult]`` whose docstring's first line says what it answers, returning
``await run_in_lab(ctx, run_x, request)``. :func:`register` adds one face per declared experiment
(:data:`neurotrace.EXPERIMENTS`), its annotations from the entry's flags (``openWorldHint`` = it may
reach the hub), then the three non-experiment tools (``list_models``, ``release_model``, ``run_status``).
A face without an experiment, or an experiment without a face, stops the server at start-up.
"""

from neurotrace import EXPERIMENTS
from neurotrace.tools import (
    attention,
    attribute,
    benchmark,
    capture,
    clamp_sweep,
    compare,
    diff,
    edit,
    explain,
    features,
    find_neurons,
    fit_sae,
    generate_facts,
    graph,
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
from neurotrace.tools._runner import EXPERIMENT, READ_ONLY

#: the face of each experiment (its function is named like the tool; matched against EXPERIMENTS)
FACES = (models.load_model, generate_facts.generate_facts, trace.trace, compare.compare, plot.plot,
         clamp_sweep.clamp_sweep, capture.capture, fit_sae.fit_sae, features.features, intervene.intervene, benchmark.benchmark,
         find_neurons.find_neurons, probe.probe, steer.steer, logit_lens.logit_lens, attention.attention,
         attribute.attribute, patch.patch, graph.graph, explain.explain, edit.edit, diff.diff)


def register(server) -> None:
    """Add every declared experiment's face, then the model-cache and run-status tools, to ``server``."""
    faces = {face.__name__: face for face in FACES}
    declared = [e.name for e in EXPERIMENTS]
    missing, extra = sorted(set(declared) - set(faces)), sorted(set(faces) - set(declared))
    if missing or extra:
        raise RuntimeError(f"tools/ faces and neurotrace.EXPERIMENTS disagree: no face for {missing}, no "
                           f"experiment for {extra}; add tools/<name>.py to FACES, or the entry to the list")
    for experiment in EXPERIMENTS:
        annotations = EXPERIMENT.model_copy(update={"open_world_hint": experiment.reaches_hub})
        server.add_tool(faces[experiment.name], annotations=annotations)
    server.add_tool(models.list_models, annotations=READ_ONLY)
    server.add_tool(models.release_model, annotations=EXPERIMENT)
    server.add_tool(run_status.run_status, annotations=READ_ONLY)
