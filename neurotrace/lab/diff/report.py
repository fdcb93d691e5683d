"""diff results into the run: JSON record, CSV tables, figures, summary and the next call."""

from typing import Any

import torch

from neurotrace.lab.diff.figures import FIGURES
from neurotrace.lab.diff.measures import InputMeasures
from neurotrace.lab.diff.schema import (
    MAX_FEATURE_ROWS,
    RESULTS_FILE,
    DiffRequest,
    DiffResult,
    DiffResults,
    FeatureDiff,
    HeadDiff,
    InputDiff,
    LayerDiff,
)
from neurotrace.lab.model.access.tokens import token_texts
from neurotrace.lab.model.weights.loading import LoadedModel

LENS_MIN = 0.01   # nats: a lens divergence below this is not reported as a divergence


def _inputs(lm: LoadedModel, labels: list[str], token_ids: list[list[int]], measured: list, gens: list,
            top: list[tuple[str, str]]) -> list[InputDiff]:
    out = []
    for i, (m, f) in enumerate(measured):
        kt = m.kl_tokens
        pos = int(kt.argmax())
        out.append(InputDiff(index=i, prompt=labels[i], kl_last=round(float(kt[-1]), 5), kl_max=round(float(kt.max()), 5),
                             kl_max_position=pos, kl_max_token=token_texts(lm.tokenizer, [token_ids[i][pos]])[0],
                             base_top=top[i][0], tuned_top=top[i][1], floor_kl_max=round(float(f.kl_tokens.max()), 5),
                             above_floor=bool(kt.max() > f.kl_tokens.max()), base_generation=gens[i][0],
                             tuned_generation=gens[i][1]))
    return out


def _mean(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(items).mean(0)


def write_report(run: Any, request: DiffRequest, lm: LoadedModel, *, mode: str, floor: str, labels: list[str],
                 token_ids: list[list[int]], measured: list[tuple[InputMeasures, InputMeasures]], cka: list[float],
                 floor_cka: list[float], gens: list[tuple[str, str]], tops: list[tuple[str, str]],
                 features: tuple[str, list[FeatureDiff]] | None = None) -> DiffResult:
    tuned = [m for m, _ in measured]
    ctrl = [f for _, f in measured]
    cos, rel, lens = _mean([m.cosine for m in tuned]), _mean([m.rel_change for m in tuned]), _mean([m.lens_kl for m in tuned])
    f_rel, f_lens = _mean([f.rel_change for f in ctrl]), _mean([f.lens_kl for f in ctrl])
    rows = ["embed"] + [f"block {layer}" for layer in range(len(rel) - 1)]
    layers = [LayerDiff(row=rows[r], cosine=round(float(cos[r]), 6), rel_change=round(float(rel[r]), 6),
                        cka=round(cka[r], 6), lens_kl=round(float(lens[r]), 6), floor_rel_change=round(float(f_rel[r]), 6),
                        floor_lens_kl=round(float(f_lens[r]), 6)) for r in range(len(rows))]
    heads: list[HeadDiff] = []
    n_heads = 0
    if all(m.head_tv is not None for m in tuned + ctrl):
        tv, f_tv = _mean([m.head_tv for m in tuned]), _mean([f.head_tv for f in ctrl])
        n_heads = int(tv.shape[1])
        heads = [HeadDiff(layer=layer, head=h, tv=round(float(tv[layer, h]), 6), floor_tv=round(float(f_tv[layer, h]), 6))
                 for layer in range(tv.shape[0]) for h in range(tv.shape[1])]
    inputs = _inputs(lm, labels, token_ids, measured, gens, tops)
    rec = DiffResults(model=request.model, base=request.base or f"{request.model} (adapter off)", mode=mode, floor=floor,
                      chat=request.chat, n_inputs=len(inputs), n_tokens=sum(len(t) for t in token_ids), layers=layers,
                      inputs=inputs, heads=heads, n_heads=n_heads,
                      kl_tokens=[[round(float(v), 5) for v in m.kl_tokens] for m in tuned],
                      tokens=[token_texts(lm.tokenizer, t) for t in token_ids])
    site, table = features or (None, [])
    if features is not None:
        rec.dictionary, rec.dictionary_site, rec.features = request.dictionary, site, table[:MAX_FEATURE_ROWS]
        run.write_csv("tables/features.csv", [x.model_dump() for x in table])
    run.write_json(RESULTS_FILE, rec.model_dump(mode="json"))
    run.write_csv("tables/layers.csv", [x.model_dump() for x in layers])
    run.write_csv("tables/inputs.csv", [x.model_dump() for x in inputs])
    if heads:
        run.write_csv("tables/heads.csv", [x.model_dump() for x in heads])
    run.write_csv("tables/tokens.csv", [{"input": i, "position": p, "token": rec.tokens[i][p], "kl": rec.kl_tokens[i][p]}
                                        for i in range(len(inputs)) for p in range(len(rec.tokens[i]))])
    figures = [run.write_figure(f"figures/{name}.png", fn(rec)) for name, fn in FIGURES.items()
               if name != "heads" or heads]
    ranked = sorted(inputs, key=lambda x: -x.kl_max)
    above_layers = [x.row for x in layers if x.rel_change > x.floor_rel_change]
    peak = max(layers, key=lambda x: x.rel_change).row
    lens_from = next((x.row for x in layers if x.lens_kl > max(x.floor_lens_kl, LENS_MIN)), None)
    top_heads = sorted([h for h in heads if h.tv > h.floor_tv], key=lambda h: -h.tv)[: request.top_k]
    top_features = [x for x in table if x.above_floor][: request.top_k]
    summary = _summary(rec, ranked, above_layers, peak, lens_from, top_heads, request.top_k)
    if features is not None:
        summary += _features_summary(table, top_features, site, [x.prompt for x in inputs])
    run.set_summary(summary)
    first = ranked[0]
    return DiffResult(
        run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures,
        next=(f"Trace where the change lives: trace with models ['{request.model}'] and a fact built from "
              f"{first.prompt!r} (target {first.tuned_top.strip()!r}), then the same on "
              f"'{request.base or request.model.split('+')[0]}' as the control."
              + (f" Read what the changed features respond to: features with dictionary '{request.dictionary}', "
                 f"model '{request.base or request.model.split('+')[0]}' and features "
                 f"{[x.feature for x in top_features[:5]]}." if top_features else "")),
        model=request.model, base=rec.base, mode=mode, top_inputs=ranked[: request.top_k],
        layers_above_floor=above_layers, peak_layer=peak, lens_divergence_from=lens_from, top_heads=top_heads,
        n_inputs_above_floor=sum(x.above_floor for x in inputs), top_features=top_features,
        n_features_above_floor=sum(x.above_floor for x in table) if features is not None else None)


def _features_summary(table: list[FeatureDiff], top: list[FeatureDiff], site: str | None, prompts: list[str]) -> str:
    n_above = sum(x.above_floor for x in table)
    if not top:
        return (f" Dictionary features at {site}: none of {len(table)} active features changes its mean activation "
                "above the floor.")
    shown = "; ".join(f"{x.feature} ({x.base_mean:.3g} -> {x.tuned_mean:.3g}, floor change {x.floor_change:+.3g}; "
                      f"most on {prompts[x.top_input][:40]!r})" for x in top[:3])
    return (f" Dictionary features at {site}: {n_above} of {len(table)} active features change their mean activation "
            f"above the floor; most: {shown} (tables/features.csv).")


def _summary(rec: DiffResults, ranked: list[InputDiff], above: list[str], peak: str, lens_from: str | None,
             heads: list[HeadDiff], k: int) -> str:
    n_above = sum(x.above_floor for x in ranked)
    shown = "; ".join(f"{x.prompt[:60]!r} (KL {x.kl_max:.3g} nats at {x.kl_max_token!r}; next token "
                      f"{x.base_top!r} -> {x.tuned_top!r})" for x in ranked[: min(k, 3)])
    peak_row = next(x for x in rec.layers if x.row == peak)
    text = (f"Diff of {rec.model} against {rec.base} on {rec.n_inputs} inputs ({rec.n_tokens} tokens), "
            f"control: {rec.floor}. Outputs: {n_above} of {rec.n_inputs} inputs differ above the floor; most "
            f"changed: {shown}. ")
    text += (f"Residual: change exceeds the floor at {len(above)} of {len(rec.layers)} rows"
             + (f" (from '{above[0]}')" if above else "") + f", peaking at '{peak}' (relative change "
             f"{peak_row.rel_change:.3g} vs floor {peak_row.floor_rel_change:.3g}, CKA {peak_row.cka:.3g}). ")
    text += (f"Logit lens diverges from '{lens_from}'." if lens_from else "Logit lens: no row diverges above the floor.")
    if rec.heads:
        text += (" Heads changed most: " + ", ".join(f"{h.layer}.{h.head} (TV {h.tv:.3g} vs floor {h.floor_tv:.3g})"
                                                    for h in heads[:3]) + "." if heads
                 else " No attention head changes above the floor.")
    changed = sum(x.base_generation != x.tuned_generation for x in ranked)
    if any(x.base_generation or x.tuned_generation for x in ranked):
        text += f" Greedy generations differ on {changed} of {rec.n_inputs} inputs."
    return text
