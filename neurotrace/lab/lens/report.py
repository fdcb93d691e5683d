"""logit_lens results into the run: the JSON record, a CSV of top tokens, the figures and the summary."""

from typing import Any

from torch import Tensor

from neurotrace.lab.lens.figures import FIGURES
from neurotrace.lab.lens.schema import (
    RESULTS_FILE,
    LogitLensRequest,
    LogitLensResult,
    LogitLensResults,
    TunedReport,
)
from neurotrace.lab.model.access.tokens import token_texts
from neurotrace.lab.model.weights.loading import LoadedModel


def _record(request: LogitLensRequest, lm: LoadedModel, ids: Tensor, p_target: Tensor, top_p: Tensor,
            top_i: Tensor, target: int, pos: int, tuned: TunedReport | None) -> LogitLensResults:
    tok = lm.tokenizer
    n_rows = p_target.shape[0]
    top_text = [[token_texts(tok, top_i[r, p].tolist()) for p in range(top_i.shape[1])] for r in range(n_rows)]
    return LogitLensResults(
        model=request.model, prompt=request.prompt, tokens=token_texts(tok, ids.tolist()),
        target=token_texts(tok, [target])[0], target_id=target, scored_position=pos,
        rows=["embed"] + [f"block {layer}" for layer in range(n_rows - 1)], p_target=p_target.tolist(),
        top_tokens=top_text, top_probs=top_p.tolist(), tuned=tuned)


def _summary(rec: LogitLensResults, first: int | None) -> str:
    last = [row[rec.scored_position] for row in rec.p_target]
    where = ("is never the top-1 prediction" if first is None else "is already the top-1 prediction at the "
             "embedding (row 0)" if first == 0 else f"first becomes the top-1 prediction after layer {first - 1}'s "
             f"block (row {first}, '{rec.rows[first]}')")
    text = (f"Logit lens of {rec.model} on {rec.prompt!r} ({len(rec.tokens)} tokens): at the scored "
            f"position {rec.scored_position} {rec.target!r} {where}; p(target) goes from {last[0]:.3g} (embeddings) to "
            f"{last[-1]:.3g} (final), peaking at {max(last):.3g} at '{rec.rows[last.index(max(last))]}'.")
    if rec.tuned:
        t = rec.tuned
        mid = len(t.kl_tuned) // 2
        text += (f" Tuned lens ({t.n_train} fitting / {t.n_heldout} held-out states): held-out KL at "
                 f"'{rec.rows[mid]}' {t.kl_tuned[mid]:.3g} nats vs {t.kl_logit_lens[mid]:.3g} for "
                 "the logit lens.")
    return text


def write_report(run: Any, request: LogitLensRequest, lm: LoadedModel, ids: Tensor, p_target: Tensor,
                 top_p: Tensor, top_i: Tensor, target: int, pos: int, tuned: TunedReport | None) -> LogitLensResult:
    rec = _record(request, lm, ids, p_target, top_p, top_i, target, pos, tuned)
    run.write_json(RESULTS_FILE, rec.model_dump(mode="json"))
    run.write_csv("tables/top_tokens.csv", [
        {"row": rec.rows[r], "position": p, "token": rec.tokens[p], "rank": k + 1,
         "top_token": rec.top_tokens[r][p][k], "prob": round(rec.top_probs[r][p][k], 6)}
        for r in range(len(rec.rows)) for p in range(len(rec.tokens)) for k in range(request.top_k)])
    figures = [run.write_figure(f"figures/{name}.png", fn(rec)) for name, fn in FIGURES.items()]
    top1_last = (top_i[:, pos, 0] == target).tolist()
    first = top1_last.index(True) if any(top1_last) else None
    summary = _summary(rec, first)
    run.set_summary(summary)
    return LogitLensResult(
        run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures,
        next=(f"Call attribute with model='{request.model}', the same prompt and target={rec.target.strip()!r} "
              "to see which heads, MLPs and neurons write this prediction."),
        model=request.model, tokens=rec.tokens, target=rec.target, target_id=target, rows=rec.rows,
        p_target=[row[pos] for row in rec.p_target], scored_position=pos,
        top_last=[rec.top_tokens[r][pos] for r in range(len(rec.rows))], first_top1_row=first,
        first_top1_layer=first - 1 if first else None, tuned=tuned)
