"""benchmark: do attribution methods find what is really there?

Part ``circuits`` scores correlation, gradients, integrated gradients, patching and a random baseline
on compiled circuits with known causal features (:mod:`neurotrace.lab.benchmark.circuits`), AUROC mean +- std
over seeds, plus a scrambled-label null; it checks the expected dissociation. Part ``planted`` runs
neurotrace's own ``trace`` (exact and approximate) and head patching on the planted-circuit GPT-2
(:mod:`neurotrace.lab.benchmark.planted_model`) and checks that they point at the planted MLP layer, the last subject
token and the planted head; correlation and gradient saliency over the same sites are reported too.
"""


import time

from neurotrace.lab.benchmark.attribution import METHODS, jacobian_check, score_circuits
from neurotrace.lab.benchmark.circuits import CAUSAL, N_FEATURES, REGIMES
from neurotrace.lab.benchmark.figures import auroc_rows, heatmap, rounded, settings_title
from neurotrace.lab.benchmark.planted_checks import planted_checks
from neurotrace.lab.benchmark.report import report
from neurotrace.lab.benchmark.schema import (
    DISSOCIATION_FILE,
    PLANTED_FILE,
    SCORES_FILE,
    AurocRow,
    BenchmarkRequest,
    BenchmarkResult,
    CircuitScores,
    Dissociation,
    PlantedRecord,
)
from neurotrace.lab.lab import Lab
from neurotrace.lab.progress import NULL_REPORTER, Reporter

_POS, _NEG = len(CAUSAL), N_FEATURES - len(CAUSAL)
#: std of one AUROC under chance (Mann-Whitney null, no ties): sqrt((m + n + 1) / (12 m n))
CHANCE_SD = ((_POS + _NEG + 1) / (12 * _POS * _NEG)) ** 0.5


def _near_chance(row: AurocRow) -> bool:
    """Mean within 3 chance standard errors of 0.5 (0.17 at 16 seeds; a weak check with few seeds)."""
    return abs(row.auroc_mean - 0.5) < 3 * CHANCE_SD / row.n ** 0.5


def dissociation(rows: list[AurocRow]) -> dict[str, bool]:
    """Each expected property of the benchmark, checked."""
    a = {(r.method, r.circuit): r.auroc_mean for r in rows}
    row = {(r.method, r.circuit): r for r in rows}
    return {
        "correlation fails only on confounded": a[("correlation", "confounded")] < 0.95
        and a[("correlation", "clean")] > 0.99 and a[("correlation", "suppressor")] > 0.99,
        "gradient fails only on suppressor": a[("gradient", "suppressor")] < 0.95
        and a[("gradient", "clean")] > 0.99 and a[("gradient", "confounded")] > 0.99,
        "integrated gradients recover every circuit": all(a[("integrated_gradients", c)] > 0.99 for c in REGIMES),
        "patching recovers every circuit": all(a[("patching", c)] > 0.99 for c in REGIMES),
        "random sits near 0.5": all(_near_chance(row[("random", c)]) for c in REGIMES),
        "scrambled labels fall to about 0.5": all(_near_chance(row[(m, "null")]) for m in METHODS),
    }


def run_benchmark(request: BenchmarkRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> BenchmarkResult:
    """Score attribution methods on compiled circuits and check neurotrace's tracing on a planted model."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    with lab.store.open_run("benchmark", request, seed=request.seed) as run:
        out = BenchmarkResult(run_id=run.run_id, summary="", artifacts=[])
        total = (request.seeds if "circuits" in request.parts else 0) + (1 if "planted" in request.parts else 0)
        if "circuits" in request.parts:
            seed_done, last = [0], [0.0]

            def on_seed(s: int) -> None:
                seed_done[0] = s + 1
                reporter.step(s + 1, total, f"circuits, seed {s + 1}")

            def tick() -> None:  # cancel at every method and IG chunk; progress at most twice a second
                if time.monotonic() - last[0] < 0.5:
                    return reporter.check()
                last[0] = time.monotonic()
                reporter.step(seed_done[0], total, f"circuits, seed {seed_done[0] + 1}")

            scores = score_circuits(request.seeds, request.samples, request.ig_steps, request.ig_baseline,
                                    request.seed, on_seed=on_seed, check=tick)
            rows = auroc_rows(scores)
            out.table = rounded(rows)
            out.jacobian_max_abs_diff = jacobian_check(request.samples, request.seed)
            out.dissociation = dissociation(rows)
            out.dissociation["analytic Jacobian equals autograd (1e-6)"] = out.jacobian_max_abs_diff <= 1e-6
            out.dissociation_holds = all(out.dissociation.values())
            run.write_csv("tables/auroc.csv", [r.model_dump() for r in rows])
            run.write_json(SCORES_FILE, CircuitScores(
                seeds=request.seeds, samples=request.samples, ig_steps=request.ig_steps,
                ig_baseline=request.ig_baseline, seed=request.seed, auroc=scores).model_dump(mode="json"))
            run.write_json(DISSOCIATION_FILE, Dissociation(
                checks=out.dissociation, holds=out.dissociation_holds,
                jacobian_max_abs_diff=out.jacobian_max_abs_diff).model_dump(mode="json"))
            out.figures.append(run.write_figure("figures/auroc_heatmap.png", heatmap(
                out.table, settings_title(request))))
        if "planted" in request.parts:
            reporter.step(total - 1, total, "planted transformer")
            _run_planted(request, lab, run, out, reporter)
            reporter.step(total, total, "planted transformer done")
        out.summary = report(request, out)
        out.report = run.write_text("report.md", report(request, out, short=False) + "\n")
        run.set_summary(out.summary.splitlines()[0])
        out.artifacts = run.artifact_uris()
        out.next = (f"Call trace with models=['{out.planted_model}'] to see the planted route yourself, then on your "
                    "own model." if out.planted_model else "Add part 'planted' to check trace on a planted model.")
        return out


def _run_planted(request: BenchmarkRequest, lab: Lab, run, out: BenchmarkResult, reporter: Reporter) -> None:
    model_dir = "planted-gpt2"
    pm, out.planted = planted_checks(lab, run.dir / model_dir, request.seed, reporter)
    out.planted_model = str(pm.path)
    for f in sorted(pm.path.iterdir()):
        run.record_file(f"{model_dir}/{f.name}")
    for rid in dict.fromkeys(c.run_id for c in out.planted if c.run_id):
        run.add_input(rid)
    run.write_csv("tables/planted.csv", [c.model_dump() for c in out.planted])
    record = PlantedRecord(model_dir=str(pm.path), mlp_layer=pm.mlp_layer, head_layer=pm.head_layer, head=pm.head,
                           subject_last_pos=pm.subject_last_pos, facts=list(pm.facts), checks=out.planted)
    run.write_json(PLANTED_FILE, record.model_dump(mode="json"))
