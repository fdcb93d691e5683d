"""compare: read earlier trace runs on the same facts side by side.

Each input run's trace_results.json is read back into its typed records and the models are merged.
Models are compared on the same kind and token category only; when their depths differ, layers are
aligned by relative depth (layer / n_layers) and the reading says so. The comparison is written as its
own run (layer x model heatmap, peak bars with bands, restoration curves) that links the runs it read.
"""

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.results import RunResult
from neurotrace.lab.tracing.figures import COMPARE_FIGURES, COMPARE_RESULTS_FILE, load
from neurotrace.lab.tracing.pairs import pair_differences, pair_line
from neurotrace.lab.tracing.report import RESULTS_FILE, cross_model, hint, model_lines, same_model
from neurotrace.lab.tracing.schema import ModelRecord, TraceResults


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: ClassVar[str] = "compare"
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
    tuned_pair: dict[str, Any] | None = Field(None, description="Two entries of one base (e.g. 'B' and "
                                              "'B+adapter'): per-fact tuned - base at the tuned peak site, with band.")


def _settings(results: TraceResults, m: ModelRecord) -> dict[str, str | None]:
    """What a run was traced with, as label words; a corruption's own knobs only under that corruption."""
    c = results.corruption
    noise = c.get("kind") == "noise"
    return {"corruption": str(c.get("kind")), "scale": f"noise x{c.get('scale'):g}" if noise and c.get("scale") else None,
            "samples": f"{c.get('samples')} samples" if noise else None, "window": f"window {m.window}",
            "mode": results.mode, "seed": f"seed {results.seed}" if noise else None,
            "noise_std_from": f"std from {results.noise_std_from}" if noise else None,
            "rome_compat": "ROME conventions" if results.rome_compat else "default conventions",
            "components": "+".join(m.aie) or None}


def _labels(entries: list[tuple[str, str, dict[str, str | None]]]) -> list[str]:
    """Each entry's name; a name seen more than once is followed by what differs between its runs, or by
    the run-id tail when nothing does."""
    labels = []
    for name, _, settings in entries:
        same = [s for n, _, s in entries if n == name]
        if len(same) == 1:
            labels.append(name)
            continue
        differ = [k for k in settings if len({s[k] for s in same}) > 1]
        if "corruption" in differ:                  # noise vs swap: the kind says it, not its knobs
            differ = [k for k in differ if k not in ("scale", "samples", "seed", "noise_std_from")]
        words = [settings[k] for k in differ if settings[k]]
        labels.append(f"{name} ({', '.join(words)})" if words else name)
    for i, (label, (_, run_id, _)) in enumerate(zip(labels, entries, strict=True)):
        if label in labels[:i]:
            labels[i] = f"{label} ({run_id[-8:]})"
    return labels


def _shared(runs: list[TraceResults]) -> dict[str, Any]:
    """The merged run's mode and corruption: the runs' own when they all agree, 'mixed' (with each run's)
    otherwise, so figures never claim the first run's settings for all."""
    modes = list(dict.fromkeys(r.mode for r in runs))
    corruptions = [r.corruption for r in runs]
    same = all(c == corruptions[0] for c in corruptions)
    return {"mode": modes[0] if len(modes) == 1 else " / ".join(modes),
            "corruption": corruptions[0] if same else {"kind": "mixed", "runs": corruptions}}


def _read(request: CompareRequest, lab: Lab, reporter: Reporter) -> list[tuple[str, TraceResults]]:
    runs: list[tuple[str, TraceResults]] = []
    fact_ids: list[str] | None = None
    for i, run_id in enumerate(request.run_ids):
        reporter.step(i, len(request.run_ids), f"reading {run_id}")
        if run_id in request.run_ids[:i]:
            raise InputError(f"run_ids[{i}]", f"run {run_id} is listed twice", fix="list each trace run once")
        if lab.store.manifest(run_id).tool != "trace":
            raise InputError(f"run_ids[{i}]", f"run {run_id} is not a trace run", fix="pass trace run ids")
        results = load(lab.store.read_json(run_id, RESULTS_FILE))
        for m in results.models.values():     # the facts checked: traced, or skipped (e.g. unknown) before any grid
            ids = sorted([f.fact_id or f.prompt for f in m.facts] + [s.fact_id for s in m.skipped])
            if fact_ids is not None and ids != fact_ids:
                raise InputError(f"run_ids[{i}]", f"run {run_id} traced other facts than the first run",
                                 fix="compare runs made on the same dataset or pack")
            fact_ids = ids
        runs.append((run_id, results))
    return runs


def _merge(request: CompareRequest, lab: Lab, reporter: Reporter) -> tuple[TraceResults, str, dict | None]:
    """The merged records and the first run's own name of its first model (what ``plot`` of that run knows)."""
    runs = _read(request, lab, reporter)
    entries = [(name, run_id, _settings(results, m)) for run_id, results in runs for name, m in results.models.items()]
    records = [m for _, results in runs for m in results.models.values()]
    labels = _labels(entries)
    models = {key: m.model_copy(update={"model": key})                  # the reading names each entry once
              for key, m in zip(labels, records, strict=True)}
    merged = runs[0][1].model_copy(update={"models": models, **_shared([r for _, r in runs]),
                                           "relative_depth": len({m.n_layers for m in models.values()}) > 1})
    lines = [line for m in models.values() for line in model_lines(m)[:2]]
    pair = None
    if len(models) == 2:
        base, tuned = models.values()
        if "+" in base.model.split(" (")[0] and "+" not in tuned.model.split(" (")[0]:
            base, tuned = tuned, base                      # the entry that names an adapter is the tuned side
        pair = pair_differences(base, tuned)
        unknown = [m for m in (base, tuned) if any(s.unknown for s in m.skipped)]
        if pair is None and unknown and tuned.peak is not None:
            lines.append(f"No per-fact pair difference: {unknown[0].model} did not trace the facts it does not "
                         "know; trace both with `trace_unknown: true` to keep them as a control.")
    lines += [pair_line(pair)] if pair else []
    merged = merged.model_copy(update={"interpretation": [cross_model(list(models.values())), *lines]})
    return merged, entries[0][0] if entries else "", pair


def run_compare(request: CompareRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> CompareResult:
    """Merge trace runs over the same facts and write the side-by-side figures and reading."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    merged, first, pair = _merge(request, lab, reporter)
    models = list(merged.models.values())
    with lab.store.open_run("compare", request) as run:
        for run_id in request.run_ids:
            run.add_input(run_id)
        run.write_json(COMPARE_RESULTS_FILE, merged.model_dump(mode="json"))
        if pair:
            run.write_csv("tables/tuned_pair.csv", pair["facts"])
        figures = [run.write_figure(f"figures/{n}.png", f(merged)) for n, f in COMPARE_FIGURES.items()]
        what = "runs of the same model" if same_model(models) else "models"
        summary = f"Compared {len(models)} {what} on {merged.fact_set}.\n" + "\n".join(
            f"- {line}" for line in merged.interpretation)
        run.set_summary(summary.splitlines()[0])
        nxt = (f"Call {hint('plot', {'run_id': request.run_ids[0], 'kind': 'heatmap', 'options': {'model': first}})}"
               " to inspect one model's map of a fact.") if models else ""
        return CompareResult(run_id=run.run_id, summary=summary[:2000], artifacts=run.artifact_uris(), figures=figures,
                             next=nxt, models=list(merged.models),
                             peak_layers={k: m.peak.layer if m.peak else None for k, m in merged.models.items()},
                             peak_depths={k: m.peak.layer / m.n_layers if m.peak else None
                                          for k, m in merged.models.items()},
                             relative_depth=merged.relative_depth,
                             known={k: m.n_known for k, m in merged.models.items()},
                             interpretation=merged.interpretation,
                             tuned_pair={k: v for k, v in pair.items() if k != "facts"} if pair else None)
