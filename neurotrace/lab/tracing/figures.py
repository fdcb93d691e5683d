"""Figures of a trace run, drawn from trace_results.json (so ``plot`` can redraw them any time).

ROME's conventions: the residual stream in Purples, MLP in Greens, attention in Reds; per-fact maps
show p(target) restored with the corrupted probability as the colour scale's floor; tokens are their
decoded text (``' Tower'``), subject tokens starred; titles name the model and the fact; every colour
bar says its unit. Averages carry their 95% band (Student t x sd / sqrt(n)) and n per token category.

``FIGURES`` maps a kind to ``fn(results, **options) -> Figure``:

* ``heatmap`` - one fact's layer x token map, one panel per kind (options ``model``, ``fact`` index);
* ``aie`` - average indirect effect over known facts, layer x token category (n per category);
* ``layer_curve`` - effect at the last subject token by layer with its band (masked LMs add the
  scored-position and context curves); by relative depth when the models' depths differ;
* ``flow`` - per layer, how much restoring each kind carries;
* ``layer_model_heatmap`` - layers (or relative depth) x models, every row at the same kind and token
  category (the first model's peak site, which compare's text reads);
* ``peak_bars`` - each model's largest effect at that same site, with its band;
* ``heads`` - layer x head effect of restoring one head at the scored position (``heads: true`` runs).
"""

import re
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from neurotrace.lab.errors import InputError
from neurotrace.lab.plotstyle import finish, new_figure, short
from neurotrace.lab.tracing.schema import ModelRecord, TraceResults

RESULTS_FILE = "trace_results.json"
KIND_CMAP = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}
KIND_COLOR = {"resid": "tab:purple", "mlp": "tab:green", "attn": "tab:red"}
KIND_NAME = {"resid": "hidden state (resid)", "mlp": "MLP", "attn": "attention"}
DEPTH_BINS = 24
LINESTYLES = ("-", "--", ":", "-.")


def load(results: dict | TraceResults) -> TraceResults:
    """The typed records of a trace (or compare) run's results."""
    return results if isinstance(results, TraceResults) else TraceResults.model_validate(results)


def _model(res: TraceResults, model: str | None) -> ModelRecord:
    if model is None:
        return next(iter(res.models.values()))
    for name, m in res.models.items():
        if name == model or short(name) == model:
            return m
    raise InputError("options.model", f"no model {model!r} in this run", fix=f"use one of {list(res.models)}")


def _subtitle(res: TraceResults, m: ModelRecord | None = None, width: int = 80) -> str:
    """Who and on what, with the run's settings; a compare of runs whose settings differ says 'mixed settings'
    (each entry's label says its own) rather than claiming the first run's for all."""
    who = short(m.model) if m else ", ".join(short(n) for n in res.models)
    if len(who) > 3 * width:
        who = f"{len(res.models)} models"
    kind = res.corruption.get("kind")
    if kind == "mixed" or " / " in res.mode:
        text = f"{who} - {res.fact_set} (mixed settings: see each label)"
    else:
        text = f"{who} - {res.fact_set} ({res.mode}, {kind}" + (f", window {m.window})" if m else ")")
    return textwrap.fill(text, width, break_on_hyphens=False)             # wide enough for its figure


def _nothing_known(res: TraceResults, m: ModelRecord, title: str) -> Figure:
    fig, ax = new_figure(width=6, height=2.5)
    ax.axis("off")
    ax.text(0.5, 0.5, f"{short(m.model)} knows none of the {len(m.facts)} facts:\nno stored fact to locate",
            ha="center", va="center", transform=ax.transAxes)
    return finish(fig, title, _subtitle(res, m))


def _relative(models: list[ModelRecord]) -> bool:
    return len({m.n_layers for m in models}) > 1


def _fact_index(m: ModelRecord, fact: int | str | None) -> int:
    if fact is None:
        return next((i for i, f in enumerate(m.facts) if f.correct), 0)
    if isinstance(fact, str) and not fact.isdigit():
        ids = [f.fact_id for f in m.facts]
        if fact not in ids:
            raise InputError("options.fact", f"no fact {fact!r} in this run", fix=f"use an index or one of {ids[:10]}")
        return ids.index(fact)
    return int(fact)


def heatmap(results: dict, model: str | None = None, fact: int | str | None = None) -> Figure:
    """One fact's map; ``fact`` is an index into the model's facts or a fact id."""
    res = load(results)
    m = _model(res, model)
    if not m.facts:
        return _nothing_known(res, m, "Causal trace")
    fact = _fact_index(m, fact)
    if not isinstance(fact, int) or not 0 <= fact < len(m.facts):
        raise InputError("options.fact", f"fact must be an index 0..{len(m.facts) - 1} (got {fact!r})",
                         fix=f"use an integer 0..{len(m.facts) - 1}")
    f = m.facts[fact]
    components = list(f.restored)
    fig, axes = new_figure(1, len(components), width=4.4 * len(components), height=0.35 * len(f.tokens) + 2.2, squeeze=False)
    s, e = f.subject_range
    labels = [repr(t) + ("*" if s <= i < e else "") for i, t in enumerate(f.tokens)]
    for ax, k in zip(axes[0], components, strict=True):
        grid = np.array(f.restored[k]).T                                        # (pos, layer)
        top = max(float(grid.max()), f.p_corrupted + 1e-6)
        im = ax.imshow(grid, cmap=KIND_CMAP.get(k, "Purples"), vmin=f.p_corrupted, vmax=top, aspect="auto")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("layer" + (f" (window {m.window})" if k != "resid" else ""))
        ax.set_title(f"restore {KIND_NAME.get(k, k)}")
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.046, label=f"p({f.target!r}) restored\n(floor: corrupted {f.p_corrupted:.3f})")
    return finish(fig, f"{short(m.model)}: {f.prompt!r} -> {f.target!r} (p clean {f.p_clean:.3f})",
                  _subtitle(res, m) + " - * subject tokens")


def aie(results: dict, model: str | None = None) -> Figure:
    res = load(results)
    m = _model(res, model)
    components = [k for k, v in m.aie.items() if v]
    if not components:
        return _nothing_known(res, m, "Average indirect effect")
    n = m.readings.bucket_n
    rows = [i for i in range(len(m.categories)) if i < len(n) and n[i] > 0]    # categories these facts have
    labels = [f"{m.categories[i]} (n={n[i]})" for i in rows]
    fig, axes = new_figure(1, len(components), width=4.6 * len(components), height=max(3.4, 1.9 + 0.45 * len(rows)),
                           squeeze=False)
    for ax, k in zip(axes[0], components, strict=True):
        grid = np.array(m.aie[k], dtype=float).T[rows]                          # (bucket, layer)
        top = max(float(np.nanmax(grid)), 1e-6) if np.isfinite(grid).any() else 1e-6
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=KIND_CMAP.get(k, "Purples"), vmin=0, vmax=top, aspect="auto")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("layer")
        ax.set_title(f"restore {KIND_NAME.get(k, k)}")
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.046, label="avg indirect effect\n(p restored - p corrupted)")
    return finish(fig, f"{short(m.model)}: average indirect effect over {m.n_known} known facts",
                  _subtitle(res, m))


def _x(m: ModelRecord, relative: bool) -> np.ndarray:
    layers = np.arange(m.n_layers)
    return layers / m.n_layers if relative else layers


def _bucket(m: ModelRecord, label: str) -> int | None:
    return m.categories.index(label) if label in m.categories else None


def layer_curve(results: dict, **_: Any) -> Figure:
    res = load(results)
    models = list(res.models.values())
    relative = _relative(models)
    shared = set.intersection(*(set(m.aie) for m in models)) if models else set()   # same-kind curves only
    fig, ax = new_figure(width=9.5, height=4.2)                                # the legend sits right of the axes
    for i, m in enumerate(models):
        c = _bucket(m, "last subject token")
        for k, grid in m.aie.items():
            if not grid or c is None or k not in shared:
                continue
            y = np.array(grid, dtype=float)[:, c]
            band = np.array(m.aie_band.get(k) or np.zeros_like(grid), dtype=float)[:, c]
            x = _x(m, relative)
            ax.plot(x, y, marker="o", color=KIND_COLOR.get(k), label=f"{short(m.model)} {k} (n={m.readings.bucket_n[c]})",
                    ls=LINESTYLES[i % len(LINESTYLES)])
            ax.fill_between(x, y - band, y + band, color=KIND_COLOR.get(k), alpha=0.15)
        if m.lm_kind == "masked" and m.curves_mean.get("context_patch"):
            ax.plot(_x(m, relative), np.array(m.curves_mean["context_patch"]), ":", marker=".", color="grey",
                    label=f"{short(m.model)} context patch (p restored)")
    ax.set_xlabel("relative depth (layer / n_layers)" if relative else "layer")
    ax.set_ylabel("avg indirect effect at the last subject token\n(band: 95%, t x sd / sqrt(n))")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)   # off the curves
    else:
        ax.text(0.5, 0.5, "no known facts to average", ha="center", va="center", transform=ax.transAxes)
    return finish(fig, "Restoration by layer at the last subject token", _subtitle(res, width=100))


def _size(vals: np.ndarray, top: float) -> np.ndarray:
    return 30 + 700 * np.clip(vals, 0, None) / top


def flow(results: dict, model: str | None = None) -> Figure:
    """Per layer, the largest average effect of restoring each kind; one size scale for every row."""
    res = load(results)
    m = _model(res, model)
    components = [k for k, v in m.aie.items() if v]
    if not components:
        return _nothing_known(res, m, "Patching flow")
    n = m.n_layers
    rows = {k: np.nan_to_num(np.nanmax(np.array(m.aie[k], dtype=float), axis=1)) for k in components}
    top = max(max(float(v.max()) for v in rows.values()), 1e-6)              # one scale: sizes compare across rows
    fig, ax = new_figure(width=max(7.5, 3.5 + 0.22 * n), height=2.4 + 0.7 * len(components))
    for row, k in enumerate(components):
        ax.scatter(range(n), [row] * n, s=_size(rows[k], top), color=KIND_COLOR.get(k), alpha=0.75)
        ax.plot(range(n), [row] * n, color="grey", lw=0.5, zorder=0)
    refs = [top, top / 2, top / 4]
    sizes = ax.legend([ax.scatter([], [], s=_size(np.array(v), top), color="grey", alpha=0.6) for v in refs],
                      [f"{v:.2f}" for v in refs], title="effect", loc="upper left", bbox_to_anchor=(1.01, 1),
                      borderaxespad=0, labelspacing=1.3, borderpad=0.9, frameon=False)
    if m.peak:
        ax.add_artist(sizes)
        ax.axvline(m.peak.layer, color="black", ls="--", lw=1, label=f"peak: layer {m.peak.layer}\n({m.peak.component})")
        ax.legend(loc="lower left", bbox_to_anchor=(1.01, 0), borderaxespad=0, fontsize=8)
    ax.set_yticks(range(len(components)), [f"restore {k}" for k in components])
    ax.set_ylim(-0.6, len(components) - 0.4)
    ax.set_xticks(range(n))
    ax.set_xlabel("layer (circle area: max average indirect effect over token categories, one scale for all rows)")
    return finish(fig, f"{short(m.model)}: patching flow", _subtitle(res, m))


def reference_site(models: list[ModelRecord]) -> tuple[str, str] | None:
    """The (component, token category) every model is read at side by side: the first model's peak (what
    compare's text reads), so no figure sets one model's attention against another's residual."""
    ref = next((m.peak for m in models if m.peak), None)
    return (ref.component, ref.position) if ref else None


def site_curve(m: ModelRecord, component: str, position: str) -> tuple[np.ndarray, np.ndarray] | None:
    """One model's (layer,) average indirect effect and 95% band at a (component, category); None when it
    was not traced with that component or has no fact in that category."""
    c = _bucket(m, position)
    if component not in m.aie or not m.aie[component] or c is None:
        return None
    mean = np.array(m.aie[component], dtype=float)[:, c]
    band = np.array(m.aie_band.get(component) or np.zeros_like(m.aie[component]), dtype=float)[:, c]
    return (None if np.isnan(mean).all() else (mean, np.nan_to_num(band)))


def _row(m: ModelRecord, site: tuple[str, str] | None, relative: bool) -> np.ndarray:
    curve = site_curve(m, *site) if site else None
    vals = np.nan_to_num(curve[0]) if curve else np.zeros(m.n_layers)
    if not relative:
        return vals
    return np.interp(np.linspace(0, 1, DEPTH_BINS, endpoint=False), np.arange(m.n_layers) / m.n_layers, vals)


def layer_model_heatmap(results: dict, component: str | None = None) -> Figure:
    """Every model's row at the same component and token category (``component``, else the reference site)."""
    res = load(results)
    models = list(res.models.values())
    relative = _relative(models)
    site = reference_site(models)
    if component is not None:
        site = (component, site[1] if site else "last subject token")
    rows = [_row(m, site, relative) for m in models]
    width = max(len(r) for r in rows)
    fig, ax = new_figure(width=7.5, height=2.3 + 0.4 * len(models))          # sized to its rows
    kind, where = site or ("resid", "last subject token")
    im = ax.imshow(np.stack([np.pad(r, (0, width - len(r))) for r in rows]), cmap=KIND_CMAP.get(kind, "Purples"),
                   vmin=0, aspect="auto", extent=(0, 1, len(models) - 0.5, -0.5) if relative else None)
    ax.set_yticks(range(len(models)), [f"{short(m.model)}: {kind}" + ("" if site and site_curve(m, *site) else
                                                                      " (not traced)") for m in models])
    ax.set_xlabel("relative depth (layer / n_layers)" if relative else "layer")
    ax.grid(False)
    fig.colorbar(im, ax=ax, orientation="horizontal", location="bottom", fraction=0.25 / (1 + 0.4 * len(models)),
                 pad=0.3, aspect=40, label=f"avg indirect effect: {kind} at the {where} (every row)")
    return finish(fig, "Layer x model" + (" (aligned by relative depth)" if relative else ""), _subtitle(res))


def _site_peak(m: ModelRecord, site: tuple[str, str] | None) -> tuple[float, float, str]:
    """(largest effect, its band, label) of one model at the shared site."""
    curve = site_curve(m, *site) if site else None
    if curve is None:
        return 0.0, 0.0, "not traced" if site and site[0] not in m.aie else "no effect"
    layer = int(np.nanargmax(curve[0]))
    return float(curve[0][layer]), float(curve[1][layer]), f"L{layer}/{m.n_layers} {site[0]}\n{site[1]}"


def peak_bars(results: dict, **_: Any) -> Figure:
    """Each model's largest effect at the same component and token category (the reference site)."""
    res = load(results)
    models = list(res.models.values())
    site = reference_site(models)
    peaks = [_site_peak(m, site) for m in models]
    vals, bands = [p[0] for p in peaks], [p[1] for p in peaks]
    fig, ax = new_figure(width=1.8 + 1.4 * len(models), height=4)
    names = [textwrap.fill(short(m.model), 16) for m in models]               # long labels wrap, never collide
    bars = ax.bar(range(len(models)), vals, yerr=bands, capsize=4, tick_label=names,
                  color=KIND_COLOR.get(site[0] if site else "", "grey"))
    for bar, (_, _, label) in zip(bars, peaks, strict=True):
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.3 * max([v + b for v, b in zip(vals, bands, strict=True)] + [1e-3]))  # room for the labels
    ax.set_ylabel("largest avg indirect effect (error bar: 95%)")
    title = f"Largest effect per model: {site[0]} at the {site[1]}" if site else "Peak effect per model"
    return finish(fig, title, _subtitle(res, width=int(7 + 9 * (1.8 + 1.4 * len(models)))))


def has_heads(results: dict) -> bool:
    """Whether any known fact of any model carries head results (trace with heads: true)."""
    return any(f.correct and f.heads is not None for m in load(results).models.values() for f in m.facts)


def heads(results: dict, model: str | None = None) -> Figure:
    res = load(results)
    m = _model(res, model)
    rows = [np.array(f.heads) - f.p_corrupted for f in m.facts if f.correct and f.heads is not None]
    if not rows:
        fig, ax = new_figure(width=6, height=2.5)
        ax.axis("off")
        ax.text(0.5, 0.5, "no head results (trace with heads: true, on known facts)", ha="center", va="center",
                transform=ax.transAxes)
        return finish(fig, "Head patching", _subtitle(res, m))
    grid = np.mean(rows, axis=0)                                                 # (layer, head)
    fig, ax = new_figure(width=1.5 + 0.45 * grid.shape[1], height=1.5 + 0.4 * grid.shape[0])
    im = ax.imshow(grid, cmap="Reds", vmin=0, vmax=max(float(grid.max()), 1e-6), aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(grid.shape[1]))
    ax.set_yticks(range(grid.shape[0]))
    ax.grid(False)
    fig.colorbar(im, ax=ax, label="avg indirect effect\n(one head restored at the scored position)")
    return finish(fig, f"{short(m.model)}: head patching over {len(rows)} known facts", _subtitle(res, m))


FIGURES: dict[str, Callable[..., Figure]] = {
    "heatmap": heatmap, "aie": aie, "layer_curve": layer_curve, "flow": flow,
    "layer_model_heatmap": layer_model_heatmap, "peak_bars": peak_bars, "heads": heads,
}


def default_figures(results: TraceResults) -> Iterator[tuple[str, Figure]]:
    """The figures a trace run writes by default."""
    yield "layer_curve", layer_curve(results)
    for name, m in results.models.items():
        if any(m.aie.values()):
            yield f"aie_{slug(name)}", aie(results, name)
        if m.facts:
            yield f"heatmap_{slug(name)}", heatmap(results, name)
        if m.n_known and any(f.heads is not None for f in m.facts):
            yield f"heads_{slug(name)}", heads(results, name)
    if len(results.models) > 1:
        yield "layer_model_heatmap", layer_model_heatmap(results)
        yield "peak_bars", peak_bars(results)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-60:] or "model"
#: kinds drawn only when the run has their data (plot without a kind)
APPLIES: dict[str, Callable[[dict], bool]] = {"heads": has_heads}

#: compare's figures: the same functions over the merged records of the compared runs
COMPARE_RESULTS_FILE = "compare_results.json"
COMPARE_FIGURES: dict[str, Callable[..., Figure]] = {
    "layer_model_heatmap": layer_model_heatmap, "peak_bars": peak_bars, "layer_curve": layer_curve,
}
