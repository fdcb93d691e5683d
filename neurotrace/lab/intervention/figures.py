"""intervene's figure, drawn from report.json so ``plot`` can redraw it: the SAE features ranked by the
effect of ablating each alone (drawn when the run ranked features)."""

from typing import Any

from matplotlib.figure import Figure

from neurotrace.lab.intervention.schema import FeatureEffect, InterveneReport, PromptReport
from neurotrace.lab.plotstyle import plt  # the house module selects the Agg backend before pyplot

REPORT_FILE = "report.json"


def rank_metric(entries: list[PromptReport]) -> str:
    """What feature ranks are changes of: log p of the one target, of each prompt's target, or of the
    baseline's next token where a prompt has no target."""
    targets = {e.target for e in entries}
    if len(targets) == 1:
        (target,) = targets
        return f"log p({target!r})" if target else "log p(the baseline's next token)"
    return "log p(target)" if None not in targets else "log p(target, or the baseline's next token without one)"


def effects_figure(features: list[FeatureEffect], n_prompts: int, metric: str) -> Figure:
    """The ranked single-feature ablation effects as horizontal bars."""
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(features) + 1.2))
    ax.barh([f"f{f.feature}" for f in features][::-1], [f.effect for f in features][::-1])
    ax.set(xlabel=f"mean change in {metric} when ablated alone (nats)",
           title=f"SAE features ranked by single-feature ablation (n={n_prompts} prompt{'s' * (n_prompts != 1)})")
    return fig


def feature_effects(results: dict[str, Any]) -> Figure:
    """The ranked feature effects of an intervene run (its report.json's top_features)."""
    report = InterveneReport.model_validate(results)
    if not report.top_features:
        raise ValueError("this intervene run ranked no features (it had no SAE or rank_features=0)")
    return effects_figure(report.top_features, len(report.prompts), rank_metric(report.prompts))


FIGURES = {"feature_effects": feature_effects}
APPLIES = {"feature_effects": lambda results: bool(results.get("top_features"))}
