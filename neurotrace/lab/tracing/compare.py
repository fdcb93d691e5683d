"""compare: read earlier trace runs on the same facts side by side.

Each input run's trace_results.json is merged into one: models from every run, per-model peaks and
curves, and the plain-language cross-model reading. The comparison is written as its own run (with
layer x model heatmap, peak bars and restoration curves) that links the runs it read.
"""

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.results import RunResult
from neurotrace.lab.tracing.figures import layer_curve, layer_model_heatmap, peak_bars
from neurotrace.lab.tracing.report import RESULTS_FILE, interpret


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_ids: list[str] = Field(min_length=1, description="trace run ids to compare (their models are merged; "
                                                          "one multi-model trace run works too).")


class CompareResult(RunResult):
    models: list[str]
    peak_layers: dict[str, int | None] = Field(description="Model -> layer of its peak average indirect effect.")
    known: dict[str, int] = Field(description="Model -> facts it knows.")
    interpretation: list[str]


def run_compare(request: CompareRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> CompareResult:
    """Merge trace runs over the same facts and write the side-by-side figures and reading."""
    merged: dict = {}
    fact_ids: list[str] | None = None
    for i, run_id in enumerate(request.run_ids):
        reporter.step(i, len(request.run_ids), f"reading {run_id}")
        if run_id in request.run_ids[:i]:
            raise InputError(f"run_ids[{i}]", f"run {run_id} is listed twice", fix="list each trace run once")
        if lab.store.manifest(run_id).tool != "trace":
            raise InputError(f"run_ids[{i}]", f"run {run_id} is not a trace run", fix="pass trace run ids")
        results = lab.store.read_json(run_id, RESULTS_FILE)
        for name, m in results["models"].items():
            ids = [f["fact_id"] or f["prompt"] for f in m["facts"]]
            if fact_ids is not None and ids != fact_ids:
                raise InputError(f"run_ids[{i}]", f"run {run_id} traced other facts than the first run",
                                 fix="compare runs made on the same dataset or pack")
            fact_ids = ids
            models = merged.setdefault("models", {})
            key = name if name not in models else f"{name} ({run_id[-8:]})"
            models[key] = {**m, "model": key}                    # the reading names each entry once
        merged.setdefault("fact_set", results["fact_set"])
        merged.setdefault("mode", results["mode"])
        merged.setdefault("kinds", results["kinds"])
    models = list(merged["models"].values())
    merged["interpretation"] = interpret(models)
    with lab.store.open_run("compare", request) as run:
        for run_id in request.run_ids:
            run.add_input(run_id)
        run.write_json("compare_results.json", merged)
        figures = [run.write_figure(f"figures/{n}.png", f(merged)) for n, f in
                   (("layer_model_heatmap", layer_model_heatmap), ("peak_bars", peak_bars), ("layer_curve", layer_curve))]
        summary = f"Compared {len(models)} models on {merged['fact_set']}.\n" + "\n".join(
            f"- {line}" for line in merged["interpretation"])
        run.set_summary(summary.splitlines()[0])
        return CompareResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures,
                             next="Call plot with a trace run_id and kind='heatmap' to inspect one model's map.",
                             models=list(merged["models"]),
                             peak_layers={k: (m["peak"] or {}).get("layer") for k, m in merged["models"].items()},
                             known={k: m["n_known"] for k, m in merged["models"].items()},
                             interpretation=merged["interpretation"])
