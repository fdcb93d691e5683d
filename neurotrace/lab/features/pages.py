"""One feature's page: top contexts, quantile samples, histogram, promoted/suppressed tokens, Neuronpedia JSON.

The promoted and suppressed tokens are the feature's decoder direction (model units) times the final norm's
elementwise scale (its weight; Gemma's ``1 + weight``: read off the norm itself, as ``attribute`` does) times
``W_U``: the logit change per unit of activation, ignoring the norm's data-dependent division (the direct
path, as Neuronpedia's positive/negative logits are). The Neuronpedia-compatible JSON uses the field names of
Neuronpedia's feature export (``pos_str``/``pos_values``, ``neg_str``/``neg_values``, ``frac_nonzero``,
``freq_hist_data_bar_*``, ``activations`` with ``tokens``/``values``/``maxValue``/``maxValueTokenIndex``).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from neurotrace.lab.attribution import freeze, unembedding
from neurotrace.lab.capture import TraceDataset
from neurotrace.lab.features.index import FeatureIndex, histogram, quantile_samples
from neurotrace.lab.features.schema import Example, FeaturePage, TokenEffect
from neurotrace.lab.model.weights.loading import LoadedModel

RIGHT = 2     # tokens shown right of the highlighted one


def _short(text: str, chars: int = 32) -> str:
    """The last ``chars`` characters before the highlighted token's ``[[``, and the rest: the reply stays small."""
    cut = text.find("[[")
    return ("…" + text[cut - chars:]) if cut > chars else text


def _sig(x: float) -> float:
    return float(f"{x:.5g}")


@dataclass
class Context:
    """Where a row sits: its context's tokens, the position, and the rows of that context's positions."""

    tokens: list[str]
    position: int
    rows: dict[int, int]          # position -> row


def locate(ds: TraceDataset, row: int) -> Context:
    step = ds.steps[int(ds.meta["step_index"][row])]
    start, _ = step["rows"]
    rows = {int(p): start + i for i, p in enumerate(step["positions"])}
    return Context(tokens=step["tokens"], position=int(ds.meta["pos"][row]), rows=rows)


def example(ds: TraceDataset, row: int, act: float, window: int) -> Example:
    ctx = locate(ds, row)
    lo, p = max(0, ctx.position - window), ctx.position
    text = "".join([*ctx.tokens[lo:p], "[[" + ctx.tokens[p] + "]]", *ctx.tokens[p + 1:p + 1 + RIGHT]])
    return Example(row=int(row), context=int(ds.meta["step_index"][row]), position=p, activation=round(act, 4),
                   token=ctx.tokens[p], text=text)


def context_values(ds: TraceDataset, index: FeatureIndex, feature: int, row: int, window: int
                   ) -> dict[str, Any]:
    """Neuronpedia's activation record: the window's tokens and the feature's value on each."""
    ctx = locate(ds, row)
    positions = list(range(max(0, ctx.position - window), min(len(ctx.tokens), ctx.position + 1 + RIGHT)))
    rows = np.array([ctx.rows.get(p, -1) for p in positions])
    values = index.activation(feature, rows)
    values[rows < 0] = 0.0
    top = int(np.argmax(values)) if len(values) else 0
    return {"tokens": [ctx.tokens[p] for p in positions], "values": [round(float(v), 4) for v in values],
            "maxValue": round(float(values.max()) if len(values) else 0.0, 4), "maxValueTokenIndex": top,
            "minValue": round(float(values.min()) if len(values) else 0.0, 4)}


@torch.no_grad()
def token_effects(lm: LoadedModel, directions: torch.Tensor, n: int) -> list[tuple[list[tuple[str, float]],
                                                                                    list[tuple[str, float]]]]:
    """Per direction (rows of ``directions``, model units): (promoted, suppressed) tokens with their values."""
    w_u, _ = unembedding(lm)
    d = directions.float().to(w_u.device)
    if lm.adapter.final_norm:
        norm = lm.adapter.module(lm.model, lm.adapter.final_norm)
        x = torch.ones(lm.d_model, dtype=next(norm.parameters()).dtype, device=w_u.device)
        d = d * freeze(norm, x, "final norm").weight.to(d.device)
    logits = d @ w_u.T                                                                   # (n_features, vocab)
    out = []
    decode = lm.tokenizer.decode
    for row in logits:
        hi, lo = row.topk(n), (-row).topk(n)
        out.append(([(decode([int(i)]), _sig(float(v))) for v, i in zip(hi.values, hi.indices, strict=True)],
                    [(decode([int(i)]), _sig(-float(v))) for v, i in zip(lo.values, lo.indices, strict=True)]))
    return out


def build_page(ds: TraceDataset, index: FeatureIndex, feature: int, effects: tuple[list, list], request: Any,
               uri: str) -> tuple[FeaturePage, dict[str, Any]]:
    """(the compact page for the result, the full page as Neuronpedia-compatible JSON)."""
    frows, facts = index.entries(feature)
    top = [example(ds, int(r), float(a), request.window) for r, a in zip(frows[:request.n_top],
                                                                          facts[:request.n_top], strict=True)]
    bands = quantile_samples(index, feature, request.n_quantiles, request.per_quantile, request.seed)
    band_examples = [[example(ds, int(r), float(a), request.window) for r, a in zip(rows, acts, strict=True)]
                     for _, _, rows, acts in bands]
    hist = histogram(facts)
    promoted, suppressed = effects
    freq = float(index.frequency[feature])
    short = [e.model_copy(update={"text": _short(e.text)}) for e in top[:3]]
    picks = [b[0] for b in band_examples if b]
    picks = [picks[i] for i in sorted({0, len(picks) // 2, len(picks) - 1})] if picks else []
    page = FeaturePage(index=feature, frequency=round(freq, 6), dense=bool(index.dense[feature]),
                       max_activation=round(float(index.max_activation[feature]), 4),
                       mean_activation=round(float(index.mean_activation[feature]), 4), top=short,
                       quantiles=[e.model_copy(update={"text": _short(e.text)}) for e in picks],
                       promoted=[TokenEffect(token=t, value=v) for t, v in promoted[:5]],
                       suppressed=[TokenEffect(token=t, value=v) for t, v in suppressed[:5]], page=uri)
    activations = [{**context_values(ds, index, feature, int(r), request.window), "binMin": -1, "binMax": -1,
                    "binContains": -1} for r in frows[:request.n_top]]
    for (lo, hi, rows, _), in_band in zip(bands, band_examples, strict=True):
        for r in rows:
            activations.append({**context_values(ds, index, feature, int(r), request.window), "binMin": round(lo, 4),
                                "binMax": round(hi, 4), "binContains": len(in_band)})
    full = {"index": str(feature), "maxActApprox": page.max_activation, "frac_nonzero": freq,
            "pos_str": [t for t, _ in promoted], "pos_values": [v for _, v in promoted],
            "neg_str": [t for t, _ in suppressed], "neg_values": [v for _, v in suppressed],
            "freq_hist_data_bar_heights": hist["counts"],
            "freq_hist_data_bar_values": [round((a + b) / 2, 6) for a, b in zip(hist["edges"][:-1], hist["edges"][1:],
                                                                                 strict=True)],
            "activations": activations,
            "top": [e.model_dump() for e in top], "quantiles": [[e.model_dump() for e in b] for b in band_examples],
            "mean_activation": page.mean_activation, "histogram_edges": hist["edges"]}
    return page, full
