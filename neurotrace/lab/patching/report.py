"""patch results into the run: grids as JSON and arrays, figures, the top cells and the summary."""

from typing import Any

import numpy as np
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.tokens import token_texts
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
HEAD_PARTS = ("head_q", "head_k", "head_v", "head_pattern", "path")
MAX_TICKS = 32


def _plain(t: Tensor) -> list:
    """Nested lists for JSON, NaN (a head that is no sender) as None."""
    return np.where(np.isnan(t.numpy()), None, t.numpy()).tolist()


def restored(values: Tensor, m_clean: float, m_corrupt: float) -> Tensor:
    span = m_clean - m_corrupt
    return (values - m_corrupt) / span if abs(span) > 1e-12 else values * 0


def _cells(kind: str, grid: Tensor, norm: Tensor, tokens: list[str]) -> list[PatchCell]:
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
             top: list[PatchCell]) -> str:
    metric = {"logit_diff": f"logit({target!r}) - logit({contrast!r})", "p_target": f"p({target!r})",
              "kl": "KL(clean || patched)"}[request.metric]
    text = (f"Activation patching in {request.model}: {metric} is {m_clean:.3g} on the clean prompt and "
            f"{m_corrupt:.3g} on the corrupt one.")
    if top:
        best = ", ".join(f"{c.component} L{c.layer}" + (f" H{c.head}" if c.head is not None else "")
                         + (f" at {c.token!r}" if c.token is not None else "") + f" ({c.restored:.2f})"
                         for c in top[:3])
        text += f" Most restoring: {best} (1 = fully restored)."
    return text


def write_patch_report(run: Any, request: PatchRequest, lm: LoadedModel, clean: Tensor, corrupt: Tensor,
                       grids: dict[str, Tensor], target: int, contrast: int | None, m_clean: float,
                       m_corrupt: float) -> PatchResult:
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
    cells = [c for k in grids for c in _cells(k, grids[k], norms[k], tokens)]
    top = sorted(cells, key=lambda c: -abs(c.restored))[:N_TOP]
    run.write_csv("tables/top_cells.csv", [c.model_dump() for c in top])
    summary = _summary(request, names[0], rec.contrast, m_clean, m_corrupt, top)
    run.set_summary(summary)
    differing = [i for i, (a, b) in enumerate(zip(clean.tolist(), corrupt.tolist(), strict=True)) if a != b]
    nxt = ("Call patch with components=['head_out'] to find the heads behind the attention effect, then attention on "
           "the clean prompt to see where those heads look." if "head_out" not in grids else
           "Call attention with the clean prompt and heads=[...the top heads...] to see where they look.")
    return PatchResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures, next=nxt,
                       model=request.model, tokens=tokens, differing=differing, target=names[0],
                       contrast=rec.contrast, metric=request.metric, metric_clean=m_clean,
                       metric_corrupt=m_corrupt, top=top)
