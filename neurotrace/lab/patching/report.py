"""patch results into the run: grids as JSON and arrays, figures, the top cells and the summary."""

from typing import Any

import numpy as np
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.tokens import token_texts
from neurotrace.lab.model.runtime.precision import Agreement
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.patching.schema import (
    PATCH_RESULTS_FILE,
    PatchCell,
    PatchRequest,
    PatchResult,
    PatchResults,
)
from neurotrace.lab.plotstyle import DIVERGING_CMAP, finish, new_figure, short

N_TOP = 10
RUN_TOLERANCE = 0.1     # restored fraction: consecutive resid_pre layers this close read as one cell
MIN_RESTORING = 0.05    # below this the summary names no cell as restoring
ANTI_MIN = 0.01         # anti-restoring: restored below minus this (smaller is float noise around 0)
ANTI_SHOWN = 0.1        # an anti-restoring cell the summary names (restored below minus this)
LAYER0_NOTE = ("the layer-0 residual at a changed token is the clean token's embedding, the input itself: it "
               "restores by construction and locates nothing")
HEAD_PARTS = ("head_q", "head_k", "head_v", "head_pattern", "path")
MAX_TICKS = 32


def _plain(t: Tensor) -> list:
    """Nested lists for JSON, NaN (a head that is no sender) as None."""
    return np.where(np.isnan(t.numpy()), None, t.numpy()).tolist()


def restored(values: Tensor, m_clean: float, m_corrupt: float) -> Tensor:
    span = m_clean - m_corrupt
    return (values - m_corrupt) / span if abs(span) > 1e-12 else values * 0


def grid_cells(kind: str, grid: Tensor, norm: Tensor, tokens: list[str]) -> list[PatchCell]:
    out = []
    for index in np.ndindex(*grid.shape):
        layer = index[0]
        per_head = kind == "head_out" or kind in HEAD_PARTS
        pos = None if per_head else index[1]
        head = index[1] if per_head else (index[2] if kind == "head_out_pos" else None)
        if (kind == "resid_pre" and pos == len(tokens) - 1) or np.isnan(float(grid[index])):
            continue                       # the whole residual at the scored position restores trivially
        out.append(PatchCell(component=kind, layer=layer, position=pos, head=head,
                             token=None if pos is None else tokens[pos], value=float(grid[index]),
                             restored=float(norm[index])))
    return out


def _merge_resid_runs(cells: list[PatchCell]) -> list[PatchCell]:
    """One cell per run of consecutive resid_pre layers at a position whose restored fractions stay within
    :data:`RUN_TOLERANCE` of the run's first: the residual carries the same information on until a block moves
    it, so ten such cells say one thing and would crowd the informative MLP or attention cell out of the list."""
    out: list[PatchCell] = []
    open_runs: dict[int | None, int] = {}           # position -> index in out of its latest resid_pre run
    for cell in sorted(cells, key=lambda c: (c.component != "resid_pre", c.position or 0, c.layer)):
        at = open_runs.get(cell.position) if cell.component == "resid_pre" else None
        run = out[at] if at is not None else None
        if run is not None and cell.layer == (run.through_layer if run.through_layer is not None else run.layer) + 1 \
                and abs(cell.restored - run.restored) <= RUN_TOLERANCE:
            out[at] = run.model_copy(update={"through_layer": cell.layer})
            continue
        out.append(cell)
        if cell.component == "resid_pre":
            open_runs[cell.position] = len(out) - 1
    return out


def _caution(cell: PatchCell, differing: set[int]) -> PatchCell:
    if cell.component == "resid_pre" and cell.layer == 0 and cell.position in differing:
        return cell.model_copy(update={"note": LAYER0_NOTE})
    return cell


def ranked(cells: list[PatchCell], differing: set[int], n: int = N_TOP) -> tuple[list[PatchCell], list[PatchCell]]:
    """(most restoring, anti-restoring): the ``n`` cells of largest positive ``restored``, consecutive resid_pre
    runs merged and the layer-0 residual at a changed token cautioned; and, apart, the ``n`` most negative
    (below ``-ANTI_MIN``)."""
    merged = [_caution(c, differing) for c in _merge_resid_runs(cells)]
    top = sorted((c for c in merged if c.restored > 0), key=lambda c: (-c.restored, c.layer))[:n]
    anti = sorted((c for c in merged if c.restored < -ANTI_MIN), key=lambda c: (c.restored, c.layer))[:n]
    return top, anti


def load(results: dict | PatchResults) -> PatchResults:
    """The typed record of a patch run's results."""
    return results if isinstance(results, PatchResults) else PatchResults.model_validate(results)


def heatmap(results: dict | PatchResults, component: str | None = None) -> Any:
    """One patched kind's restored fraction (``component``, default the run's first kind): layer x position or
    layer x head; head_out_pos shows (layer.head) x position."""
    rec = load(results)
    kind = component or next(iter(rec.restored))
    if kind not in rec.restored:
        raise InputError("options", f"this patch run has no {kind!r} grid",
                         fix=f"use component = one of {', '.join(rec.restored)}")
    data = np.array(rec.restored[kind], dtype=float)          # None (no sender) -> nan
    tokens = rec.tokens
    if kind == "head_out_pos":
        data = data.transpose(0, 2, 1).reshape(-1, data.shape[1])       # (layer * head, pos)
    lim = max(1.0, float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else 1.0)
    fig, ax = new_figure(width=2.0 + 0.45 * data.shape[1], height=1.5 + 0.3 * data.shape[0])
    im = ax.imshow(data, cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    if kind == "head_out" or kind in HEAD_PARTS:
        ax.set_xlabel("head")
    elif len(tokens) <= MAX_TICKS:
        ax.set_xticks(range(len(tokens)), [repr(t)[:12] for t in tokens], rotation=60, ha="right")
    ax.set_ylabel("layer.head" if kind == "head_out_pos" else "layer")
    ax.grid(False)
    fig = finish(fig, f"Activation patching ({kind}): fraction of {rec.metric} restored", short(rec.model))
    fig.colorbar(im, ax=ax, label="restored")
    return fig


FIGURES = {"heatmap": heatmap}


def _summary(request: PatchRequest, target: str, contrast: str | None, m_clean: float, m_corrupt: float,
             top: list[PatchCell], anti: list[PatchCell]) -> str:
    metric = {"logit_diff": f"logit({target!r}) - logit({contrast!r})", "p_target": f"p({target!r})",
              "kl": "KL(clean || patched)"}[request.metric]
    text = (f"Activation patching in {request.model}: {metric} is {m_clean:.3g} on the clean prompt and "
            f"{m_corrupt:.3g} on the corrupt one.")
    if top and top[0].restored >= MIN_RESTORING:
        text += f" Most restoring: {', '.join(_cell_text(c) for c in top[:3])} (1 = fully restored)."
    else:
        text += f" No single cell restores {MIN_RESTORING} of the gap: no one component here is necessary."
    if any(c.note for c in top[:3]):
        text += " Caution: " + LAYER0_NOTE + "."
    worst = [c for c in anti[:3] if c.restored < -ANTI_SHOWN]
    if worst:
        text += (f" Anti-restoring (patched, the metric moves further from clean): "
                 f"{', '.join(_cell_text(c) for c in worst)}.")
    return text


def _cell_text(c: PatchCell) -> str:
    layers = f"L{c.layer}" if c.through_layer is None else f"L{c.layer}-L{c.through_layer}"
    return (f"{c.component} {layers}" + (f" H{c.head}" if c.head is not None else "")
            + (f" at {c.token!r}" if c.token is not None else "") + f" ({c.restored:.2f})")


def write_patch_report(run: Any, request: PatchRequest, lm: LoadedModel, clean: Tensor, corrupt: Tensor,
                       grids: dict[str, Tensor], target: int, contrast: int | None, m_clean: float,
                       m_corrupt: float, agreement: Agreement | None = None, note: str | None = None) -> PatchResult:
    tokens = token_texts(lm.tokenizer, clean.tolist())
    names = token_texts(lm.tokenizer, [target] + ([contrast] if contrast is not None else []))
    norms = {k: restored(g, m_clean, m_corrupt) for k, g in grids.items()}
    rec = PatchResults(model=request.model, clean=request.clean, corrupt=request.corrupt, tokens=tokens,
                       corrupt_tokens=token_texts(lm.tokenizer, corrupt.tolist()), metric=request.metric,
                       target=names[0], contrast=names[1] if contrast is not None else None, metric_clean=m_clean,
                       metric_corrupt=m_corrupt, values={k: _plain(g) for k, g in grids.items()},
                       restored={k: _plain(n) for k, n in norms.items()})
    run.write_json(PATCH_RESULTS_FILE, rec.model_dump(mode="json"))
    for kind, grid in grids.items():
        run.write_npy(f"arrays/{kind}.npy", grid.numpy().astype(np.float32))
    figures = [run.write_figure(f"figures/{k}.png", heatmap(rec, k)) for k in grids]
    differing = [i for i, (a, b) in enumerate(zip(clean.tolist(), corrupt.tolist(), strict=True)) if a != b]
    cells = [c for k in grids for c in grid_cells(k, grids[k], norms[k], tokens)]
    top, anti = ranked(cells, set(differing))
    run.write_csv("tables/top_cells.csv", [c.model_dump() for c in top + anti])
    summary = _summary(request, names[0], rec.contrast, m_clean, m_corrupt, top, anti)
    summary += "".join(f" {text}" + ("" if text.endswith(".") else ".")
                       for text in (note, agreement.summary if agreement else None) if text)
    run.set_summary(summary)
    nxt = ("Call patch with components=['head_out'] to find the heads behind the attention effect, then attention on "
           "the clean prompt to see where those heads look." if "head_out" not in grids else
           "Call attention with the clean prompt and heads=[...the top heads...] to see where they look.")
    return PatchResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures, next=nxt,
                       model=request.model, tokens=tokens, differing=differing, target=names[0],
                       contrast=rec.contrast, metric=request.metric, metric_clean=m_clean,
                       metric_corrupt=m_corrupt, top=top, anti=anti,
                       precision_agreement=agreement)
