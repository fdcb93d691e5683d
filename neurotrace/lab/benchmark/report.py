"""benchmark's words: the Markdown tables, the summary and report.md (the AUROC heatmap is in ``figures``).

The summary (the tool's text reply, at most ~1.6K characters so it is never cut) holds the headline,
the AUROC table and the planted checks with each method's short name; ``report.md`` holds the same
with every method's full description. Nothing here computes a score.
"""

from neurotrace.lab.benchmark.attribution import METHODS
from neurotrace.lab.benchmark.circuits import REGIMES
from neurotrace.lab.benchmark.planted_checks import PlantedCheck
from neurotrace.lab.benchmark.schema import AurocRow, BenchmarkRequest, BenchmarkResult


def markdown_table(rows: list[AurocRow]) -> str:
    cols = [*REGIMES, "null"]
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    cell = {(r.method, r.circuit): f"{r.auroc_mean:.3f} ± {r.auroc_std:.3f}" for r in rows}
    for m in METHODS:
        lines.append(f"| {m} | " + " | ".join(cell[(m, c)] for c in cols) + " |")
    return "\n".join(lines)


def planted_table(checks: list[PlantedCheck], short: bool = False) -> str:
    """The planted checks as a Markdown table; ``short`` keeps each method's name without its description
    and where it points up to the first ';' (the per-fact detail stays in report.md)."""
    if not checks:
        return ""
    lines = ["| method (planted GPT-2) | points to | planted site? |", "|---|---|---|"]
    cell = lambda text: text.replace("|", "\\|")                              # noqa: E731
    name = (lambda c: c.method.split(" (")[0]) if short else (lambda c: c.method)
    where = (lambda c: c.points_to.split("; ")[0]) if short else (lambda c: c.points_to)
    lines += [f"| {cell(name(c))} | {cell(where(c))} | {'yes' if c.correct else 'no'} |" for c in checks]
    return "\n".join(lines)


def report(request: BenchmarkRequest, out: BenchmarkResult, short: bool = True) -> str:
    """The summary (``short``: method names only in the planted table) or report.md's text."""
    lines = []
    if out.table:
        verdict = "holds" if out.dissociation_holds else "DOES NOT hold"
        failed = [k for k, v in out.dissociation.items() if not v]
        lines += [f"Compiled circuits: the expected dissociation {verdict} (AUROC mean ± std over {request.seeds} "
                  f"seeds, {request.samples} samples; IG {request.ig_steps} steps; analytic vs autograd gradients "
                  f"differ by at most {out.jacobian_max_abs_diff:.1e})."
                  + (f" Failed: {'; '.join(failed)}." if failed else ""), "", markdown_table(out.table), ""]
    if out.planted:
        right = sum(c.correct for c in out.planted)
        lines += [f"Planted transformer: {right}/{len(out.planted)} checks point at the planted route "
                  "(MLP layer 1 at the subject token -> head 2.0)"
                  + ("; what each method scores: report.md." if short else "."), "",
                  planted_table(out.planted, short=short)]
    return "\n".join(lines).strip()
