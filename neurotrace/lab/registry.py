"""Every experiment, by tool name: ``name -> "module:function"``.

The function's signature is ``run_x(request: XRequest, *, lab: Lab, reporter: Reporter) -> XResult``.
The CLI builds one subcommand per entry from the request model; the MCP tools live in
``neurotrace.tools`` (one thin module per tool).
"""

EXPERIMENTS: dict[str, str] = {
    "benchmark": "neurotrace.lab.benchmark.run:run_benchmark",
    "trace": "neurotrace.lab.tracing.schema:run_trace",
    "compare": "neurotrace.lab.tracing.compare:run_compare",
    "load_model": "neurotrace.lab.load_model:run_load_model",
    "clamp_sweep": "neurotrace.lab.clamping.run:run_clamp_sweep",
    "generate_facts": "neurotrace.lab.facts.generate:run_generate_facts",
    "capture": "neurotrace.lab.capture.run:run_capture",
    "fit_sae": "neurotrace.lab.sae.run:run_fit_sae",
    "intervene": "neurotrace.lab.intervention.run:run_intervene",
    "plot": "neurotrace.lab.plotting:run_plot",
}
