"""benchmark's words and pictures: the Markdown tables, the AUROC heatmap, the summary and report.md.

The summary (the tool's text reply, at most ~1.6K characters so it is never cut) holds the headline,
the AUROC table and the planted checks with each method's short name; ``report.md`` holds the same
with every method's full description. Nothing here computes a score.
"""

from neurotrace.lab.benchmark.attribution import METHODS
from neurotrace.lab.benchmark.circuits import REGIMES
from neurotrace.lab.benchmark.planted_checks import PlantedCheck
from neurotrace.lab.benchmark.schema import AurocRow, BenchmarkRequest, BenchmarkResult
from neurotrace.lab.plotstyle import finish, new_figure


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


def heatmap(rows: list[AurocRow], title: str):
    """Methods x circuits AUROC (mean, ± std below); 0.5 = chance sits at the colormap's centre."""
    cols = [*REGIMES, "null"]
    cell = {(r.method, r.circuit): r for r in rows}
    grid = [[cell[(m, c)].auroc_mean for c in cols] for m in METHODS]
    fig, ax = new_figure(width=8, height=4.5)
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(len(cols)), [*REGIMES, "null\n(scrambled labels)"])
    ax.set_yticks(range(len(METHODS)), [m.replace("_", " ") for m in METHODS])
    ax.axvline(len(REGIMES) - 0.5, color="white", linewidth=3)
    for i, m in enumerate(METHODS):
        for j, c in enumerate(cols):
            r = cell[(m, c)]
            ax.text(j, i, f"{r.auroc_mean:.2f}\n± {r.auroc_std:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if abs(r.auroc_mean - 0.5) > 0.35 else "black")
    fig.colorbar(im, ax=ax, label="AUROC vs ground truth (0.5 = chance)")
    return finish(fig, "Attribution methods vs known ground truth (compiled circuits)", title)


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
