"""graph figures over graph_results.json: predicted vs actual target-logit change of the intervention checks."""

from typing import Any

from neurotrace.lab.graph.schema import GraphResults
from neurotrace.lab.plotstyle import finish, new_figure, short


def load(results: dict | GraphResults) -> GraphResults:
    return results if isinstance(results, GraphResults) else GraphResults.model_validate(results)


def checks(results: dict | GraphResults) -> Any:
    """Each intervened feature: the graph's predicted change of the target logit against the model's."""
    rec = load(results)
    fig, ax = new_figure(width=5.0, height=4.2)
    rows = rec.checks.rows if rec.checks else []
    for group, color in (("top", "tab:blue"), ("random", "tab:gray")):
        pts = [(r.predicted, r.actual) for r in rows if r.group == group]
        if pts:
            ax.scatter([p for p, _ in pts], [a for _, a in pts], color=color, label=f"{group} features", s=18)
    values = [abs(v) for r in rows for v in (r.predicted, r.actual)] or [1.0]
    lim = max(values) * 1.1
    ax.plot([-lim, lim], [-lim, lim], color="black", linewidth=0.8, linestyle="--", label="y = x")
    ax.set_xlabel("predicted change of the target logit")
    ax.set_ylabel("actual change")
    ax.legend(fontsize=8)
    what = rec.checks.intervention if rec.checks else "no checks"
    return finish(fig, f"Graph predictions vs interventions ({what}) on {rec.targets[0]!r}", short(rec.model))


FIGURES = {"checks": checks}
