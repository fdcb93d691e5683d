"""attribute figures over attribute_results.json: component bars and the layer x head map."""

from typing import Any

import numpy as np

from neurotrace.lab.attribution.schema import AttributeResults
from neurotrace.lab.plotstyle import DIVERGING_CMAP, finish, new_figure, short


def load(results: dict | AttributeResults) -> AttributeResults:
    """The typed record of an attribute run's results."""
    return results if isinstance(results, AttributeResults) else AttributeResults.model_validate(results)


def _what(rec: AttributeResults) -> str:
    if rec.contrast is not None:
        return f"logit({rec.target!r}) - logit({rec.contrast!r})"
    return f"centred logit of {rec.target!r}"


def components(results: dict | AttributeResults) -> Any:
    """Each component's direct share of the metric (embedding, attention and MLP per layer, bias)."""
    rec = load(results)
    comps = rec.components
    values = [c.value for c in comps]
    fig, ax = new_figure(width=max(5.0, 0.45 * len(comps) + 2), height=3.8)
    ax.bar(range(len(comps)), values, color=["tab:red" if v < 0 else "tab:blue" for v in values])
    ax.set_xticks(range(len(comps)), [c.name for c in comps], rotation=60, ha="right")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("direct share (logits)")
    return finish(fig, f"Direct logit attribution of {_what(rec)}", short(rec.model))


def heads(results: dict | AttributeResults) -> Any:
    """Layer x head map of each head's direct share (diverging, centred at 0)."""
    rec = load(results)
    data = np.array(rec.heads)
    lim = float(np.abs(data).max()) or 1.0
    fig, ax = new_figure(width=1.5 + 0.5 * data.shape[1], height=1.2 + 0.4 * data.shape[0])
    im = ax.imshow(data, cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.grid(False)
    fig = finish(fig, f"Per-head direct share of {_what(rec)}", short(rec.model))
    fig.colorbar(im, ax=ax, label="logits")
    return fig


FIGURES = {"components": components, "heads": heads}
