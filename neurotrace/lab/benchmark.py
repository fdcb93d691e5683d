"""benchmark: do attribution methods find what is really there?

Part ``circuits`` scores correlation, gradients, integrated gradients, patching and a random baseline
on compiled circuits with known causal features (:mod:`neurotrace.lab.circuits`), AUROC mean +- std
over seeds, plus a scrambled-label null; it checks the expected dissociation. Part ``planted`` runs
neurotrace's own ``trace`` (exact and approximate) and head patching on the planted-circuit GPT-2
(:mod:`neurotrace.lab.planted`) and checks that they point at the planted MLP layer, the last subject
token and the planted head; correlation and gradient saliency over the same sites are reported too.
"""

import tempfile
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.attribution import METHODS, score_circuits
from neurotrace.lab.circuits import REGIMES
from neurotrace.lab.lab import Lab
from neurotrace.lab.progress import Reporter
from neurotrace.lab.results import RunResult

Part = Literal["circuits", "planted"]


class BenchmarkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parts: list[Part] = Field(default_factory=lambda: ["circuits", "planted"], min_length=1,
                              description="'circuits' (compiled circuits) and/or 'planted' (planted transformer).")
    seeds: int = Field(16, ge=2, le=256, description="Seeds (fresh data and feature order) per circuit.")
    samples: int = Field(512, ge=16, le=100_000, description="Input samples per circuit and seed.")
    ig_steps: int = Field(128, ge=4, le=4096, description="Integrated-gradients midpoint steps.")
    ig_baseline: Literal["zeros", "mean"] = Field("zeros", description="Integrated-gradients baseline input.")
    seed: int = Field(0, description="Base seed.")


class AurocRow(BaseModel):
    method: str
    circuit: str = Field(description="clean | confounded | suppressor | null (scrambled labels)")
    auroc_mean: float
    auroc_std: float


class PlantedCheck(BaseModel):
    method: str
    points_to: str = Field(description="Where the method's top score is.")
    correct: bool = Field(description="Whether that is the planted site.")


class BenchmarkResult(RunResult):
    table: list[AurocRow] = Field(default_factory=list)
    dissociation_holds: bool | None = Field(None, description="The expected pattern across methods/circuits.")
    planted: list[PlantedCheck] = Field(default_factory=list)
    markdown: str = Field("", description="The results table in Markdown.")


def _rows(scores: dict[str, dict[str, list[float]]]) -> list[AurocRow]:
    rows = []
    for m in METHODS:
        for c, vals in scores[m].items():
            t = torch.tensor(vals, dtype=torch.float64)
            rows.append(AurocRow(method=m, circuit=c, auroc_mean=float(t.mean()), auroc_std=float(t.std())))
    return rows


def dissociation(rows: list[AurocRow]) -> dict[str, bool]:
    """Each expected property of the benchmark, checked."""
    a = {(r.method, r.circuit): r.auroc_mean for r in rows}
    return {
        "correlation fails only on confounded": a[("correlation", "confounded")] < 0.95
        and a[("correlation", "clean")] > 0.99 and a[("correlation", "suppressor")] > 0.99,
        "gradient fails only on suppressor": a[("gradient", "suppressor")] < 0.95
        and a[("gradient", "clean")] > 0.99 and a[("gradient", "confounded")] > 0.99,
        "integrated gradients recover every circuit": all(a[("integrated_gradients", c)] > 0.99 for c in REGIMES),
        "patching recovers every circuit": all(a[("patching", c)] > 0.99 for c in REGIMES),
        "random sits near 0.5": all(abs(a[("random", c)] - 0.5) < 0.15 for c in REGIMES),
        "scrambled labels fall to about 0.5": all(abs(a[(m, "null")] - 0.5) < 0.15 for m in METHODS),
    }


def markdown_table(rows: list[AurocRow]) -> str:
    cols = [*REGIMES, "null"]
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    cell = {(r.method, r.circuit): f"{r.auroc_mean:.3f} ± {r.auroc_std:.3f}" for r in rows}
    for m in METHODS:
        lines.append(f"| {m} | " + " | ".join(cell[(m, c)] for c in cols) + " |")
    return "\n".join(lines)


def heatmap(rows: list[AurocRow], title: str):
    from neurotrace.lab.plotstyle import finish, new_figure

    cols = [*REGIMES, "null"]
    grid = [[next(r.auroc_mean for r in rows if r.method == m and r.circuit == c) for c in cols] for m in METHODS]
    fig, ax = new_figure(width=7, height=4)
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(METHODS)), METHODS)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9)
    fig.colorbar(im, ax=ax, label="AUROC vs ground truth")
    return finish(fig, "Attribution methods vs known ground truth", title)


def run_benchmark(request: BenchmarkRequest, *, lab: Lab, reporter: Reporter) -> BenchmarkResult:
    """Score attribution methods on compiled circuits and check neurotrace's tracing on a planted model."""
    from neurotrace.lab.benchmark_planted import planted_checks

    with lab.store.open_run("benchmark", request, seed=request.seed) as run:
        rows, ok, checks, md, figures = [], None, [], "", []
        total = (request.seeds if "circuits" in request.parts else 0) + (1 if "planted" in request.parts else 0)
        if "circuits" in request.parts:
            scores = score_circuits(request.seeds, request.samples, request.ig_steps, request.ig_baseline,
                                    request.seed, on_seed=lambda s: reporter.step(s + 1, total, f"seed {s + 1}"))
            rows = _rows(scores)
            props = dissociation(rows)
            ok = all(props.values())
            md = markdown_table(rows)
            run.write_csv("tables/auroc.csv", [r.model_dump() for r in rows])
            run.write_json("auroc_per_seed.json", scores)
            run.write_json("dissociation.json", props)
            figures.append(run.write_figure("figures/auroc_heatmap.png", heatmap(
                rows, f"{request.seeds} seeds x {request.samples} samples; IG {request.ig_steps} steps")))
        if "planted" in request.parts:
            with tempfile.TemporaryDirectory() as tmp:
                checks = planted_checks(lab, tmp, request.seed)
            reporter.step(total, total, "planted transformer")
            run.write_json("planted.json", [c.model_dump() for c in checks])
        report = _report(request, md, ok, checks)
        run.write_text("report.md", report)
        run.set_summary(report.splitlines()[0])
        return BenchmarkResult(run_id=run.run_id, summary=report, artifacts=run.artifact_uris(), figures=figures,
                               next="Call trace on your own model: the planted check shows what its peaks mean.",
                               table=rows, dissociation_holds=ok, planted=checks, markdown=md)


def _report(request: BenchmarkRequest, md: str, ok: bool | None, checks: list[PlantedCheck]) -> str:
    lines = []
    if md:
        verdict = "holds" if ok else "DOES NOT hold"
        lines += [f"Compiled circuits: the expected dissociation {verdict} (AUROC mean ± std over {request.seeds} "
                  f"seeds, {request.samples} samples).", "", md, ""]
    if checks:
        right = sum(c.correct for c in checks)
        lines += [f"Planted transformer: {right}/{len(checks)} methods point at the planted site.", ""]
        lines += [f"- {c.method}: {c.points_to} ({'correct' if c.correct else 'wrong'})" for c in checks]
    return "\n".join(lines)
