"""features: what each feature of a dictionary is, read off a corpus capture (Neuronpedia-style pages).

One run encodes every row of a capture at the dictionary's site once (:mod:`neurotrace.lab.features.index`;
position-0, special-token and massive-activation rows are left out, as fit_sae leaves them out) and answers from that index:

* a **listing** of all features (frequency, max activation, top token) in ``sort`` order, one ``page_size``
  page per call from ``cursor`` (``next_cursor`` continues), the whole table in ``tables/features.csv``;
* **pages** (:mod:`neurotrace.lab.features.pages`) for ``features``, else for the best prompt/search hits, else
  for the first three listed: top contexts, quantile samples, histogram, promoted/suppressed tokens, each also
  written as Neuronpedia-compatible JSON ``features/<index>.json`` (``export_all``: every live feature in
  ``neuronpedia.jsonl``), and a ``report.html`` section;
* ``prompt``: the features most active on a text (a forward to the site, stopped there), ranked by
  activation times log10(1 / the feature's corpus density), so a feature that fires on
  half the corpus counts 0.3x its activation and one that fires on 1 token in 1,000 counts 3x; **dense**
  features (more than 10% of the corpus rows, :data:`~neurotrace.lab.sae.DENSE_FREQUENCY`) come after all the
  others unless ``include_dense`` (every listing flags them: ``dense``);
* ``search``: features whose firing coincides with where a text occurs in the corpus, by F1 of recall
  (matches where it fires) and precision (firings on matches).

Without ``capture_run_id`` it first runs ``capture`` over ``corpus`` (``max_tokens``) at the dictionary's site.
"""

import json
from typing import Any

import numpy as np
import torch

from neurotrace.lab.capture import (
    CaptureRequest,
    TraceDataset,
    capture_info,
    forward_batches,
    load_trace_dataset,
    run_capture,
)
from neurotrace.lab.errors import InputError
from neurotrace.lab.explain import dictionary_labels
from neurotrace.lab.features.html import report_section
from neurotrace.lab.features.index import FeatureIndex, encode_sparse
from neurotrace.lab.features.pages import build_page, token_effects
from neurotrace.lab.features.schema import (
    FeaturesRequest,
    FeaturesResult,
    ListingRow,
    PromptFeature,
    SearchHit,
)
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.sae import (
    DENSE_FREQUENCY,
    check_fits,
    excluded_rows,
    fitted_positions,
    load_dictionary,
    massive_limit,
    record_dictionary,
)

FIELD = "dictionary"
DENSE_SHOWN = 5     # the loudest dense features, listed (flagged) after the prompt's ranking: seen, not ranked


def _check_and_record(d: Any, lm: LoadedModel, model: str, run: Any) -> None:
    check_fits(d, lm, model, FIELD)
    record_dictionary(run, d)


def directions(d: Any, features: list[int]) -> torch.Tensor:
    idx = torch.tensor(features, dtype=torch.long)
    return d.directions(idx) if hasattr(d, "directions") else d.W_dec[idx]


def _rows(ds: TraceDataset) -> np.ndarray:
    """The rows fit_sae trains on: not position 0, not a special token, not a massive activation."""
    return np.nonzero(~excluded_rows(ds, massive_limit(ds.states)))[0].astype(np.int64)


def _capture(request: FeaturesRequest, lab: Lab, model: str, site: str, reporter: Reporter) -> str:
    if request.capture_run_id:
        return request.capture_run_id
    with reporter.stage("capture"):
        return run_capture(CaptureRequest(model=model, sites=[site], corpus=request.corpus,
                                          max_tokens=request.max_tokens, store_dtype="float16", device=request.device),
                           lab=lab, reporter=reporter).run_id


def _listing(index: FeatureIndex, top_token: list[str], request: FeaturesRequest) -> tuple[list[ListingRow], Any]:
    key = {"max_activation": -index.max_activation, "frequency": -index.frequency,
           "index": np.arange(index.d_sae)}[request.sort]
    order = np.argsort(key, kind="stable")
    page = order[request.cursor:request.cursor + request.page_size]
    rows = [ListingRow(index=int(f), frequency=round(float(index.frequency[f]), 6),
                       max_activation=round(float(index.max_activation[f]), 4), top_token=top_token[f],
                       dense=bool(index.dense[f])) for f in page]
    nxt = request.cursor + request.page_size
    return rows, (nxt if nxt < index.d_sae else None)


def specificity(index: FeatureIndex) -> np.ndarray:
    """log10(1 / density) per feature, the density floored at one row (a feature that never fired on the
    corpus counts as firing once)."""
    return np.log10(1.0 / np.maximum(index.frequency, 1.0 / max(1, index.n_rows)))


@torch.no_grad()
def _prompt_features(lm: LoadedModel, d: Any, site: str, index: FeatureIndex, text: str, n: int,
                     include_dense: bool = False) -> list[PromptFeature]:
    ids = lm.tokenizer(text).input_ids
    if not ids:
        raise InputError("prompt", "the prompt tokenizes to nothing", fix="give it text")
    if lm.max_positions and len(ids) > lm.max_positions:
        raise InputError("prompt", f"the prompt has {len(ids)} tokens, over the model's {lm.max_positions}",
                         fix="shorten it")
    (_, states), = forward_batches(lm, torch.tensor([ids]), [site], 1)
    acts = d.encode(states[site][0].float()).float()                           # (positions, d_sae)
    keep = fitted_positions(ids, lm.tokenizer.all_special_ids, states[site][0])
    acts = acts[keep]
    best, where = acts.max(0)
    peak = best.double().cpu().numpy()
    score = peak * specificity(index)
    dense = index.dense
    ranked = [int(f) for f in np.lexsort((np.arange(len(peak)), -score)) if peak[f] > 0]
    order = ranked[:n] if include_dense else (   # dense ones after the rest, a few of them always shown
        [f for f in ranked if not dense[f]][:n] + sorted((f for f in ranked if dense[f]), key=lambda f: -peak[f])[:DENSE_SHOWN])
    return [PromptFeature(index=f, activation=round(float(best[f]), 4), position=keep[int(where[f])],
                          token=lm.tokenizer.decode([ids[keep[int(where[f])]]]),
                          frequency=round(float(index.frequency[f]), 6), score=round(float(score[f]), 2),
                          dense=bool(dense[f])) for f in order]


def match_rows(ds: TraceDataset, text: str) -> np.ndarray:
    """Rows whose token ends an occurrence of ``text`` (case-insensitive) in its context's decoded text."""
    needle = text.lower()
    hits = []
    for step in ds.steps:
        tokens = step["tokens"]
        sep = "" if any(t[:1].isspace() for t in tokens) else " "     # word-level tokens carry no spaces
        ends = np.cumsum([len(t) + len(sep) for t in tokens]) - len(sep)
        joined = sep.join(tokens).lower()
        start = joined.find(needle)
        row_of = {int(p): step["rows"][0] + i for i, p in enumerate(step["positions"])}
        while start >= 0:
            pos = int(np.searchsorted(ends, start + len(needle)))
            if pos in row_of:
                hits.append(row_of[pos])
            start = joined.find(needle, start + 1)
    return np.unique(np.asarray(hits, dtype=np.int64))


def _search(ds: TraceDataset, index: FeatureIndex, text: str, n: int) -> tuple[list[SearchHit], int]:
    matches = match_rows(ds, text)
    matches = np.intersect1d(matches, _rows(ds))
    if len(matches) == 0:
        return [], 0
    feat_of_entry = np.repeat(np.arange(index.d_sae), index.counts)
    on = np.isin(index.rows, matches)
    hits = np.bincount(feat_of_entry[on], minlength=index.d_sae)
    sums = np.bincount(feat_of_entry[on], weights=index.acts[on], minlength=index.d_sae)
    recall = hits / len(matches)
    precision = hits / np.maximum(index.counts, 1)
    f1 = np.where(hits > 0, 2 * recall * precision / np.maximum(recall + precision, 1e-12), 0.0)
    order = [int(f) for f in np.argsort(-f1, kind="stable")[:n] if f1[f] > 0]
    return [SearchHit(index=f, f1=round(float(f1[f]), 4), recall=round(float(recall[f]), 4),
                      precision=round(float(precision[f]), 4), mean_activation=round(float(sums[f] / len(matches)), 4))
            for f in order], int(len(matches))


def run_features(request: FeaturesRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> FeaturesResult:
    """Feature pages of a dictionary over a corpus capture, a paged listing of all features, the features a
    prompt fires, and a search by activating text; Neuronpedia-compatible JSON per page."""
    lab.check(request)
    d = load_dictionary(lab, request.dictionary, request.device, field=FIELD)
    site, d_sae = d.cfg.site, int(d.cfg.d_sae)
    model = request.model or getattr(d.cfg, "model", "") or ""
    if not model:
        raise InputError("model", "the dictionary does not name its model", fix="pass `model`")
    for f in request.features:
        if not 0 <= f < d_sae:
            raise InputError("features", f"feature {f} is out of range for a {d_sae}-feature dictionary",
                             fix=f"use indices 0..{d_sae - 1}")
    capture_id = _capture(request, lab, model, site, reporter)
    recorded = list(capture_info(lab.store, capture_id, "capture_run_id").sites)
    if site not in recorded:
        raise InputError("capture_run_id", f"capture {capture_id} recorded {recorded[:4]}, not the dictionary's site "
                         f"{site}", fix="capture the dictionary's site (or leave capture_run_id out)")
    ds = load_trace_dataset(lab, capture_id, site, field="capture_run_id")
    if ds.states.shape[1] != d.cfg.d_in:
        raise InputError("capture_run_id", f"the capture's {site} is {ds.states.shape[1]} wide; the dictionary "
                         f"reads {d.cfg.d_in}", fix="capture the dictionary's site of the dictionary's model")
    with reporter.stage("encode"):
        index = encode_sparse(d.encode, ds.states, _rows(ds), d_sae, reporter=reporter, device=request.device)
    with lab.cache.lease(ModelRef(model=model, device=request.device)) as lm, \
            lab.store.open_run("features", request) as run:
        run.add_model(model, lm.fingerprint, lm.provenance)
        _check_and_record(d, lm, model, run)
        run.add_input(capture_id)
        top_token = [ds.token(int(index.rows[index.offsets[f]])) if index.counts[f] else "" for f in range(d_sae)]
        listing, next_cursor = _listing(index, top_token, request)
        prompt = (_prompt_features(lm, d, site, index, request.prompt, 20, request.include_dense)
                  if request.prompt else [])
        hits, n_matches = _search(ds, index, request.search, 20) if request.search else ([], 0)
        chosen = list(dict.fromkeys(request.features or [p.index for p in prompt[:3]] or [h.index for h in hits[:3]]
                                    or _first_listed(listing, request.include_dense)))
        effects = token_effects(lm, directions(d, chosen), request.n_tokens) if chosen else []
        pages, full_pages = [], []
        labels, names = dictionary_labels(lab, d), {}
        for f, eff in zip(chosen, effects, strict=True):
            rel = f"features/{f}.json"
            page, full = build_page(ds, index, f, eff, request, rel)
            full.update({"modelId": model, "layer": site, "dictionary": request.dictionary})
            if str(f) in labels:   # explain's name, scored blind (Neuronpedia keeps explanations beside the page)
                label = labels[str(f)]
                names[str(f)] = f"{label.explanation!r} ({label.verdict})"
                full["explanations"] = [{"description": label.explanation, "typeName": "neurotrace-explain",
                                         "scores": [{"method": "detection", "value": label.detection},
                                                    {"method": "fuzzing", "value": label.fuzzing}],
                                         "verdict": label.verdict, "run_id": label.run_id}]
            run.write_json(rel, full)
            pages.append(page)
            full_pages.append(full)
        _write_tables(run, index, top_token, prompt, hits)
        if request.export_all:
            _export_all(run, lm, d, ds, index, request, model, site)
        run.write_text("sections/features.html", report_section(full_pages, pages, site))
        dead = float((index.counts == 0).mean())
        summary = _summary(request, index, site, pages, prompt, hits, n_matches, dead, names)
        run.set_summary(summary)
        nxt = (f"Call features with dictionary='{request.dictionary}', capture_run_id='{capture_id}' and "
               "features=[...] for other pages, "
               + (f"cursor={next_cursor} for the next listing page, " if next_cursor is not None else "")
               + "or prompt / search.")
        return FeaturesResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), next=nxt,
                              dictionary=request.dictionary, capture_run_id=capture_id, site=site, d_sae=d_sae,
                              n_rows=index.n_rows, dead_fraction=round(dead, 4),
                              n_dense=int(index.dense.sum()), pages=pages, listing=listing,
                              next_cursor=next_cursor, prompt_features=prompt[:5], search_hits=hits[:5],
                              n_matches=n_matches, names=names)


def _first_listed(listing: list[ListingRow], include_dense: bool) -> list[int]:
    """Pages shown without features/prompt/search: the first three listed that fired (non-dense ones first)."""
    live = [r for r in listing if r.frequency > 0]
    return [r.index for r in sorted(live, key=lambda r: r.dense and not include_dense)[:3]]


def _write_tables(run: Any, index: FeatureIndex, top_token: list[str], prompt: list, hits: list) -> None:
    freq, mx, mean, dense = index.frequency, index.max_activation, index.mean_activation, index.dense
    rows = [{"index": f, "frequency": round(float(freq[f]), 6), "max_activation": round(float(mx[f]), 4),
             "mean_activation": round(float(mean[f]), 4), "top_token": top_token[f],
             "dense": bool(dense[f])} for f in range(index.d_sae)]
    run.write_csv("tables/features.csv", rows)
    if prompt:
        run.write_csv("tables/prompt_features.csv", [p.model_dump() | {"score": p.score, "dense": p.dense} for p in prompt])
    if hits:
        run.write_csv("tables/search_hits.csv", [h.model_dump() for h in hits])


def _export_all(run: Any, lm: LoadedModel, d: Any, ds: TraceDataset, index: FeatureIndex, request: Any, model: str,
                site: str) -> None:
    live = [int(f) for f in np.nonzero(index.counts > 0)[0]]
    lines = []
    for start in range(0, len(live), 256):
        chunk = live[start:start + 256]
        for f, eff in zip(chunk, token_effects(lm, directions(d, chunk), request.n_tokens), strict=True):
            _, full = build_page(ds, index, f, eff, request, "")
            full.update({"modelId": model, "layer": site})
            lines.append(json.dumps(full, ensure_ascii=False))
    run.write_text("neuronpedia.jsonl", "\n".join(lines) + "\n")


def _summary(request: FeaturesRequest, index: FeatureIndex, site: str, pages: list, prompt: list, hits: list,
             n_matches: int, dead: float, names: dict[str, str]) -> str:
    parts = [f"Indexed {index.d_sae} features of {request.dictionary} at {site} over {index.n_rows:,} corpus rows: "
             f"{dead:.0%} never fired, median frequency of the live ones "
             f"{float(np.median(index.frequency[index.counts > 0])) if (index.counts > 0).any() else 0:.2%}; "
             f"{int(index.dense.sum())} dense (over {DENSE_FREQUENCY:.0%})."]
    if index.truncated:
        parts.append(f"{index.truncated} rows fired more than 64 features; only their 64 largest were kept.")
    for p in pages[:1]:
        promoted = ", ".join(repr(t.token) for t in p.promoted[:3])
        named = f" (named {names[str(p.index)]})" if str(p.index) in names else ""
        dense = " (dense)" if p.dense else ""
        parts.append(f"Feature {p.index}{named}: fires on {p.frequency:.2%} of tokens{dense}, max {p.max_activation:.3g}, "
                     f"top context {p.top[0].text!r}; promotes {promoted}." if p.top else f"Feature {p.index}: never fired.")
    if prompt:
        rule = "activation x log10(1/density)" + ("" if request.include_dense else ", dense last")
        parts.append(f"Top on the prompt ({rule}): " + ", ".join(
            f"{p.index} ({p.activation:.3g} at {p.token!r}{', dense' if p.dense else ''})"
            for p in prompt[:3]) + ".")
        loud = [p for p in prompt[3:] if p.dense][:3]          # the dense ones not named above
        if loud and not request.include_dense:
            parts.append("Dense ones firing: " + ", ".join(f"{p.index} ({p.activation:.3g}, {p.frequency:.0%})"
                                                           for p in loud) + ".")
    if request.search:
        parts.append(f"Search {request.search!r}: {n_matches} matching tokens; " + (
            ", ".join(f"{h.index} (F1 {h.f1:.2f})" for h in hits[:3]) if hits else "no feature fires on them") + ".")
    return " ".join(parts)
