"""compare: read earlier trace runs on the same facts side by side.

Each input run's trace_results.json is read back into its typed records and the models are merged.
Models are compared on the same kind and token category only; when their depths differ, layers are
aligned by relative depth (layer / n_layers) and the reading says so. The comparison is written as its
own run (layer x model heatmap, peak bars with bands, restoration curves) that links the runs it read.
"""

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.results import RunResult
from neurotrace.lab.tracing.figures import layer_curve, layer_model_heatmap, load, peak_bars
from neurotrace.lab.tracing.report import RESULTS_FILE, cross_model, hint, model_lines
from neurotrace.lab.tracing.schema import ModelRecord, TraceResults


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_ids: list[str] = Field(min_length=1, description="trace run ids to compare (their models are merged; "
                                                          "one multi-model trace run works too).")


class CompareResult(RunResult):
    models: list[str]
    peak_layers: dict[str, int | None] = Field(description="Model -> layer of its peak average indirect effect.")
    peak_depths: dict[str, float | None] = Field(default_factory=dict, description="Model -> peak layer / n_layers.")
    relative_depth: bool = Field(False, description="True when depths differ and layers were aligned as "
                                                    "layer / n_layers.")
    known: dict[str, int] = Field(description="Model -> facts it knows.")
    interpretation: list[str]


def _merge(request: CompareRequest, lab: Lab, reporter: Reporter) -> TraceResults:
    models: dict[str, ModelRecord] = {}
    first: TraceResults | None = None
    fact_ids: list[str] | None = None
    for i, run_id in enumerate(request.run_ids):
        reporter.step(i, len(request.run_ids), f"reading {run_id}")
        if run_id in request.run_ids[:i]:
            raise InputError(f"run_ids[{i}]", f"run {run_id} is listed twice", fix="list each trace run once")
        if lab.store.manifest(run_id).tool != "trace":
            raise InputError(f"run_ids[{i}]", f"run {run_id} is not a trace run", fix="pass trace run ids")
        results = load(lab.store.read_json(run_id, RESULTS_FILE))
        first = first or results
        for name, m in results.models.items():
            ids = [f.fact_id or f.prompt for f in m.facts]
            if fact_ids is not None and ids != fact_ids:
                raise InputError(f"run_ids[{i}]", f"run {run_id} traced other facts than the first run",
                                 fix="compare runs made on the same dataset or pack")
            fact_ids = ids
            key = name if name not in models else f"{name} ({run_id[-8:]})"
            models[key] = m.model_copy(update={"model": key})        # the reading names each entry once
    merged = first.model_copy(update={"models": models, "relative_depth": len({m.n_layers for m in models.values()}) > 1})
    lines = [line for m in models.values() for line in model_lines(m)[:2]]
    return merged.model_copy(update={"interpretation": [cross_model(list(models.values())), *lines]})


def run_compare(request: CompareRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> CompareResult:
    """Merge trace runs over the same facts and write the side-by-side figures and reading."""
    lab.check(request, "compare")  # bounds and the whole-job estimate, before any work
    merged = _merge(request, lab, reporter)
    models = list(merged.models.values())
    with lab.store.open_run("compare", request) as run:
        for run_id in request.run_ids:
            run.add_input(run_id)
        run.write_json("compare_results.json", merged.model_dump(mode="json"))
        figures = [run.write_figure(f"figures/{n}.png", f(merged)) for n, f in
                   (("layer_model_heatmap", layer_model_heatmap), ("peak_bars", peak_bars), ("layer_curve", layer_curve))]
        summary = f"Compared {len(models)} models on {merged.fact_set}.\n" + "\n".join(
            f"- {line}" for line in merged.interpretation)
        run.set_summary(summary.splitlines()[0])
        nxt = (f"Call {hint('plot', {'run_id': request.run_ids[0], 'kind': 'heatmap', 'options': {'model': models[0].model}})}"
               " to inspect one model's map of a fact.") if models else ""
        return CompareResult(run_id=run.run_id, summary=summary[:2000], artifacts=run.artifact_uris(), figures=figures,
                             next=nxt, models=list(merged.models),
                             peak_layers={k: m.peak.layer if m.peak else None for k, m in merged.models.items()},
                             peak_depths={k: m.peak.layer / m.n_layers if m.peak else None
                                          for k, m in merged.models.items()},
                             relative_depth=merged.relative_depth,
                             known={k: m.n_known for k, m in merged.models.items()},
                             interpretation=merged.interpretation)
