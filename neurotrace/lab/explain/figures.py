"""explain's figure over explain_results.json: the unit's activation histogram beside its blind scores."""

from typing import Any

from neurotrace.lab.explain.schema import RESULTS_FILE, ExplainResults
from neurotrace.lab.plotstyle import finish, new_figure, short

__all__ = ["FIGURES", "RESULTS_FILE", "scores"]


def load(results: dict | ExplainResults) -> ExplainResults:
    return results if isinstance(results, ExplainResults) else ExplainResults.model_validate(results)


def scores(results: dict | ExplainResults) -> Any:
    """Left: firing activations (10 bins up to the max). Right: balanced accuracy per scorer with its 95%
    interval, beside the scrambled-key null's 95th percentile and chance."""
    rec = load(results)
    ev = rec.evidence
    fig, (left, right) = new_figure(1, 2, width=9, height=3.6)
    width = ev.max_activation / max(1, len(ev.histogram))
    left.bar([width * (i + 0.5) for i in range(len(ev.histogram))], ev.histogram, width=width * 0.9)
    left.set_xlabel("activation (firing tokens)")
    left.set_ylabel("tokens")
    left.set_title(f"density {ev.density:.2%}, threshold {ev.threshold:.3g}", fontsize=9)
    if rec.scores is None:
        right.text(0.5, 0.5, "quiz awaiting answers", ha="center", va="center", transform=right.transAxes)
        right.set_axis_off()
    else:
        methods = [("detection", rec.scores.detection), ("fuzzing", rec.scores.fuzzing)]
        for i, (_name, m) in enumerate(methods):
            right.bar(i, m.balanced_accuracy, width=0.5, yerr=[[m.balanced_accuracy - m.ci95[0]],
                                                                [m.ci95[1] - m.balanced_accuracy]], capsize=4)
            right.plot([i - 0.3, i + 0.3], [m.null_p95] * 2, color="grey", linestyle="--")
        right.axhline(0.5, color="black", linewidth=0.8)
        right.set_xticks(range(len(methods)), [f"{n} (n={m.n})" for n, m in methods])
        right.set_ylim(0, 1.05)
        right.set_ylabel("balanced accuracy (95% CI)")
        right.set_title(f"verdict: {rec.scores.verdict}; dashed: null p95", fontsize=9)
    name = f"{rec.explanation!r}" if rec.explanation else "no explanation yet"
    return finish(fig, f"{rec.unit}: {short(name, 70)}", short(rec.model))


FIGURES = {"scores": scores}
