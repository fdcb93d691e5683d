"""Every experiment, by tool name: ``name -> "module:function"``.

The function's signature is ``run_x(request: XRequest, *, lab: Lab, reporter: Reporter) -> XResult``.
The CLI builds one subcommand per entry from the request model; the MCP tools live in
``neurotrace.tools`` (one thin module per tool).
"""

EXPERIMENTS: dict[str, str] = {
    "benchmark": "neurotrace.lab.benchmark:run_benchmark",
    "trace": "neurotrace.lab.tracing:run_trace",
    "compare": "neurotrace.lab.compare:run_compare",
    "load_model": "neurotrace.lab.modeltools:run_load_model",
    "clamp_sweep": "neurotrace.lab.clamping:run_clamp_sweep",
    "generate_facts": "neurotrace.lab.facts:run_generate_facts",
    "capture": "neurotrace.lab.capture:run_capture",
    "fit_sae": "neurotrace.lab.sae:run_fit_sae",
    "intervene": "neurotrace.lab.intervene:run_intervene",
    "plot": "neurotrace.lab.plotting:run_plot",
}
