"""attention results into the run: patterns array, scores JSON/CSV, figures and the summary."""

from typing import Any

import numpy as np
from torch import Tensor

from neurotrace.lab.attention.figures import FIGURES
from neurotrace.lab.attention.schema import (
    RESULTS_FILE,
    AttentionRequest,
    AttentionResult,
    AttentionResults,
    HeadFocus,
    HeadScore,
    Source,
)
from neurotrace.lab.model.access.tokens import token_texts
from neurotrace.lab.model.weights.loading import LoadedModel

N_TOP = 5


def _focus(pattern: Tensor, tokens: list[str], heads: list[tuple[int, int]], k: int, scored: int) -> list[HeadFocus]:
    out = []
    for layer, h in heads:
        w, pos = pattern[layer, h, scored].topk(min(k, pattern.shape[-1]))
        out.append(HeadFocus(head=f"{layer}:{h}", sources=[Source(position=int(p), token=tokens[int(p)],
                                                                   weight=round(float(v), 4))
                                                            for v, p in zip(w, pos, strict=True)]))
    return out


def _top(score: Tensor) -> list[HeadScore]:
    n_heads = score.shape[1]
    order = score.flatten().argsort(descending=True)[:N_TOP].tolist()
    return [HeadScore(head=f"{i // n_heads}:{i % n_heads}", score=round(float(score.flatten()[i]), 4))
            for i in order]


def _summary(request: AttentionRequest, tokens: list[str], top: dict[str, list[HeadScore]],
             focus: list[HeadFocus]) -> str:
    parts = [f"Attention of {request.model} on {request.prompt!r} ({len(tokens)} tokens)."]
    for kind, heads in top.items():
        best = heads[0]
        parts.append(f"Top {kind.replace('_', '-')} head {best.head} ({best.score:.2f}).")
    parts += _focus_line(focus)
    return " ".join(parts)


def _focus_line(focus: list[HeadFocus]) -> list[str]:
    """The strongest weight from the scored position onto a token other than the first (position 0 is
    the attention sink most heads park on), and how many of the shown heads park there."""
    if not focus:
        return []
    best = max(((f, s) for f in focus for s in f.sources if s.position > 0), key=lambda fs: fs[1].weight, default=None)
    sink = sum(1 for f in focus if f.sources and f.sources[0].position == 0)
    out = []
    if best is not None:
        f, src = best
        out.append(f"From the scored position, the strongest weight on a token past the first is head {f.head} on "
                   f"{src.token!r} (position {src.position}, {src.weight:.2f}).")
    if sink:
        out.append(f"{sink} of {len(focus)} shown heads put most weight on position 0 (the attention sink).")
    return out


def write_report(run: Any, request: AttentionRequest, lm: LoadedModel, ids: Tensor, pattern: Tensor,
                 scores: dict[str, Tensor], shown: list[tuple[int, int]], impl: str, scored: int) -> AttentionResult:
    tokens = token_texts(lm.tokenizer, ids.tolist())
    run.write_npy("arrays/patterns.npy", pattern.numpy().astype(np.float32))
    top = {kind: _top(s) for kind, s in scores.items()}
    focus = _focus(pattern, tokens, shown, request.top_k, scored)
    rec = AttentionResults(model=request.model, prompt=request.prompt, tokens=tokens, shown=shown,
                           scores={k: v.tolist() for k, v in scores.items()},
                           shown_patterns={f"{layer}:{h}": pattern[layer, h].tolist() for layer, h in shown},
                           last_position=focus, scored_position=scored, attn_implementation=impl)
    run.write_json(RESULTS_FILE, rec.model_dump(mode="json"))
    n_layers, n_heads = pattern.shape[:2]
    run.write_csv("tables/head_scores.csv", [
        {"head": f"{layer}:{h}", **{k: round(float(v[layer, h]), 6) for k, v in scores.items()}}
        for layer in range(n_layers) for h in range(n_heads)])
    figures = [run.write_figure(f"figures/{name}.png", fn(rec)) for name, fn in FIGURES.items()]
    summary = _summary(request, tokens, top, focus)
    run.set_summary(summary)
    best = top["induction"][0].head
    return AttentionResult(
        run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures,
        next=(f"Call attribute with model='{request.model}' and this prompt to see which of these heads write "
              f"the answer; or patch to test a head (e.g. induction head {best}) causally."),
        model=request.model, tokens=tokens, n_layers=n_layers, n_heads=n_heads, last_position=focus,
        top_heads=top, attn_implementation=impl)
