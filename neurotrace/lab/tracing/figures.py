"""Figures of a trace run, drawn from trace_results.json (so ``plot`` can redraw them any time).

``FIGURES`` maps a kind to ``fn(results, **options) -> Figure``:

* ``heatmap`` - ROME-style layer x token map of one fact's indirect effect, one panel per kind
  (options: ``model``, ``fact`` index);
* ``aie`` - average indirect effect over known facts, layer x token category, one panel per kind;
* ``layer_curve`` - restoration by layer: last-subject-token effect per kind, and for masked LMs the
  mask/context patching curves (one line per model);
* ``flow`` - the patching-flow diagram: per layer, how much restoring each site carries, with the peak
  layer highlighted;
* ``layer_model_heatmap`` - layers x models of the peak kind's effect at the last subject token;
* ``peak_bars`` - each model's peak effect, labelled with its layer and kind.
"""

import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from neurotrace.lab.errors import InputError
from neurotrace.lab.plotstyle import DIVERGING_CMAP, finish, new_figure, short

RESULTS_FILE = "trace_results.json"
LAST_SUBJECT = 3  # index of "last subject token" in the categories


def _model(results: dict, model: str | None) -> dict:
    models = results["models"]
    if model is None:
        return next(iter(models.values()))
    for name, m in models.items():
        if name == model or short(name) == model:
            return m
    raise InputError("options.model", f"no model {model!r} in this run", fix=f"use one of {list(models)}")


def _subtitle(results: dict, m: dict | None = None) -> str:
    who = short(m["model"]) if m else ", ".join(short(n) for n in results["models"])
    return f"{who} - {results['fact_set']} ({results['mode']})"


def _nothing_known(results: dict, m: dict, title: str) -> Figure:
    fig, ax = new_figure(width=6, height=2.5)
    ax.axis("off")
    ax.text(0.5, 0.5, f"{short(m['model'])} knows none of the {len(m['facts'])} facts:\nno stored fact to locate",
            ha="center", va="center", transform=ax.transAxes)
    return finish(fig, title, _subtitle(results, m))


def heatmap(results: dict, model: str | None = None, fact: int | None = None) -> Figure:
    m = _model(results, model)
    facts = m["facts"]
    if fact is None:
        fact = next((i for i, f in enumerate(facts) if f["correct"]), 0)
    if not 0 <= fact < len(facts):
        raise InputError("options.fact", f"fact index {fact} out of range", fix=f"use 0..{len(facts) - 1}")
    f = facts[fact]
    kinds = list(f["indirect"])
    fig, axes = new_figure(1, len(kinds), width=4.2 * len(kinds), height=0.35 * len(f["tokens"]) + 2, squeeze=False)
    for ax, k in zip(axes[0], kinds, strict=True):
        grid = np.array(f["indirect"][k]).T                           # (pos, layer)
        lim = max(abs(grid).max(), 1e-6)
        im = ax.imshow(grid, cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim, aspect="auto")
        labels = [t + ("*" if f["subject_range"][0] <= i < f["subject_range"][1] else "") for i, t in enumerate(f["tokens"])]
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("layer")
        ax.set_title(f"restore {k}")
        fig.colorbar(im, ax=ax, fraction=0.046, label="indirect effect")
    return finish(fig, f"Causal trace: {f['prompt']} -> {f['target']} (p clean {f['p_clean']:.2f})",
                  _subtitle(results, m) + " - * subject tokens")


def aie(results: dict, model: str | None = None) -> Figure:
    m = _model(results, model)
    kinds = [k for k, v in m["aie"].items() if v]
    if not kinds:
        return _nothing_known(results, m, "Average indirect effect")
    fig, axes = new_figure(1, len(kinds), width=4.2 * len(kinds), height=4.2, squeeze=False)
    for ax, k in zip(axes[0], kinds, strict=True):
        grid = np.array(m["aie"][k], dtype=float).T
        lim = max(np.nanmax(np.abs(grid)), 1e-6)
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim, aspect="auto")
        ax.set_yticks(range(len(m["categories"])), m["categories"])
        ax.set_xlabel("layer")
        ax.set_title(f"restore {k}")
        fig.colorbar(im, ax=ax, fraction=0.046, label="avg indirect effect")
    return finish(fig, f"Average indirect effect over {m['n_known']} known facts", _subtitle(results, m))


def layer_curve(results: dict, **_: Any) -> Figure:
    fig, ax = new_figure(width=7.5, height=4.2)
    for name, m in results["models"].items():
        if m["kind"] == "masked" and m["curves_mean"]:
            for key, style in (("mask_patch", "-"), ("context_patch", "--")):
                if key in m["curves_mean"]:
                    ax.plot(m["curves_mean"][key], style, marker="o", label=f"{short(name)} {key}")
            continue
        for k, grid in m["aie"].items():
            if grid:
                ax.plot([row[LAST_SUBJECT] for row in grid], marker="o", label=f"{short(name)} {k}")
    ax.set_xlabel("layer")
    ax.set_ylabel("p(target) restored / indirect effect")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no known facts to average", ha="center", va="center", transform=ax.transAxes)
    return finish(fig, "Restoration by layer (last subject token; masked LMs: mask / context patching)",
                  _subtitle(results))


def flow(results: dict, model: str | None = None) -> Figure:
    m = _model(results, model)
    kinds = [k for k, v in m["aie"].items() if v]
    if not kinds:
        return _nothing_known(results, m, "Patching flow")
    n = m["n_layers"]
    fig, ax = new_figure(width=7.5, height=2.2 + 0.6 * len(kinds))
    peak = m["peak"]
    for row, k in enumerate(kinds):
        vals = np.nan_to_num(np.nanmax(np.array(m["aie"][k], dtype=float), axis=1))
        top = max(vals.max(), 1e-6)
        for layer in range(n):
            ax.scatter(layer, row, s=40 + 900 * max(vals[layer], 0) / top, color="tab:purple", alpha=0.75)
        ax.plot(range(n), [row] * n, color="grey", lw=0.5, zorder=0)
    if peak:
        ax.axvline(peak["layer"], color="tab:red", ls="--", label=f"peak: layer {peak['layer']} ({peak['kind']})")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_yticks(range(len(kinds)), [f"restore {k}" for k in kinds])
    ax.set_xticks(range(n))
    ax.set_xlabel("layer (circle size: max average indirect effect)")
    return finish(fig, "Patching flow", _subtitle(results, m))


def layer_model_heatmap(results: dict, kind: str | None = None) -> Figure:
    names = list(results["models"])
    rows, n = [], max(m["n_layers"] for m in results["models"].values())
    for m in results["models"].values():
        k = kind or (m["peak"]["kind"] if m["peak"] else results["kinds"][0])
        if m["kind"] == "masked" and "mask_patch" in m["curves_mean"]:
            vals = m["curves_mean"]["mask_patch"]
        elif m["aie"].get(k):
            vals = [row[LAST_SUBJECT] for row in m["aie"][k]]
        else:
            vals = [0.0] * m["n_layers"]
        rows.append(np.pad(np.nan_to_num(np.array(vals, dtype=float)), (0, n - len(vals))))
    fig, ax = new_figure(width=7.5, height=1.2 + 0.5 * len(names))
    im = ax.imshow(np.stack(rows), cmap="Purples", aspect="auto")
    ax.set_yticks(range(len(names)), [short(x) for x in names])
    ax.set_xlabel("layer")
    fig.colorbar(im, ax=ax, label="effect (last subject token; masked: mask patch)")
    return finish(fig, "Layer x model", _subtitle(results))


def peak_bars(results: dict, **_: Any) -> Figure:
    names = list(results["models"])
    vals = [(m["peak"] or {}).get("effect", 0.0) for m in results["models"].values()]
    fig, ax = new_figure(width=1.8 + 1.4 * len(names), height=4)
    bars = ax.bar([short(x) for x in names], vals, color="tab:purple")
    for bar, m in zip(bars, results["models"].values(), strict=True):
        label = f"L{m['peak']['layer']} {m['peak']['kind']}" if m["peak"] else "unknown"
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    ax.set_ylabel("peak average indirect effect")
    return finish(fig, "Peak effect per model", _subtitle(results))


FIGURES: dict[str, Callable[..., Figure]] = {
    "heatmap": heatmap, "aie": aie, "layer_curve": layer_curve, "flow": flow,
    "layer_model_heatmap": layer_model_heatmap, "peak_bars": peak_bars,
}


def default_figures(results: dict) -> Iterator[tuple[str, Figure]]:
    """The figures a trace run writes by default."""
    multi = len(results["models"]) > 1
    yield "layer_curve", layer_curve(results)
    for name, m in results["models"].items():
        if any(m["aie"].values()):
            yield f"aie_{slug(name)}", aie(results, name)
        yield f"heatmap_{slug(name)}", heatmap(results, name)
    if multi:
        yield "layer_model_heatmap", layer_model_heatmap(results)
        yield "peak_bars", peak_bars(results)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-60:] or "model"
