"""features: pages, listing, prompt and search over a corpus capture, checked against brute force (every row
encoded densely, the unembedding applied by hand), plus paging, the Neuronpedia JSON, the report section and bad
input."""

import csv
import io
import json
import random

import numpy as np
import pytest
import torch

from neurotrace import CaptureRequest, FitSAERequest, run_capture, run_fit_sae
from neurotrace.lab.capture import load_trace_dataset
from neurotrace.lab.errors import InputError, NotFound
from neurotrace.lab.features import FeaturesRequest, run_features
from neurotrace.lab.features.run import match_rows
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.access.hooks import recording
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.lab.sae import load_sae_run
from neurotrace.testing.dense import planted_dense
from neurotrace.testing.tiny import WORDS

SITE = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_gpt2):
    root = tmp_path_factory.mktemp("features")
    (root / "inputs").mkdir()
    rnd = random.Random(0)
    lines = [json.dumps({"text": " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(8, 30))) + " ."})
             for _ in range(400)]
    (root / "inputs" / "words.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    lab = Lab(LabSettings(runs_dir=root / "runs"))
    cap = run_capture(CaptureRequest(model=str(tiny_gpt2), sites=[SITE], corpus="words.jsonl", context_size=32,
                                     max_tokens=32 * 120, batch_size=32), lab=lab, reporter=NULL_REPORTER)
    fit = run_fit_sae(FitSAERequest(capture_run_id=cap.run_id, site=SITE, d_sae=64, k=4, n_steps=150, batch_size=128,
                                    splice_steps=0), lab=lab, reporter=NULL_REPORTER)
    return lab, cap.run_id, fit.run_id, str(tiny_gpt2)


def features(lab, cap, fit, **kw):
    return run_features(FeaturesRequest(dictionary=fit, capture_run_id=cap, **kw), lab=lab, reporter=NULL_REPORTER)


def dense(lab, cap, fit):
    """Every kept row encoded densely: (rows, acts [rows, d_sae])."""
    ds = load_trace_dataset(lab, cap, SITE)
    keep = np.nonzero((ds.meta["pos"] > 0) & ~np.isin(ds.meta["token_id"], ds.info.special_ids))[0]
    sae = load_sae_run(lab, fit)
    with torch.no_grad():
        acts = sae.encode(torch.from_numpy(np.asarray(ds.states)[keep]).float()).numpy()
    return ds, keep, acts


def test_pages_listing_and_csv_equal_brute_force(setup):
    lab, cap, fit, _ = setup
    ds, keep, acts = dense(lab, cap, fit)
    freq = (acts > 0).mean(0)
    live = np.nonzero(freq > 0)[0]
    chosen = [int(live[0]), int(live[-1])]
    result = features(lab, cap, fit, features=chosen, n_top=6)
    assert result.n_rows == len(keep) and [p.index for p in result.pages] == chosen
    table = list(csv.DictReader(io.StringIO(lab.store.artifact_path(result.run_id, "tables/features.csv")
                                            .read_text(encoding="utf-8"))))
    assert len(table) == 64
    np.testing.assert_allclose([float(r["frequency"]) for r in table], freq, atol=1e-6)
    np.testing.assert_allclose([float(r["max_activation"]) for r in table], acts.max(0), rtol=1e-3, atol=1e-4)
    for page in result.pages:
        col = acts[:, page.index]
        order = np.argsort(-col, kind="stable")[:6]
        full = json.loads(lab.store.artifact_path(result.run_id, f"features/{page.index}.json").read_text())
        assert [e["row"] for e in full["top"]] == keep[order].tolist()        # the densest-first rows, exactly
        assert [e["activation"] for e in full["top"]] == pytest.approx(col[order].tolist(), abs=1e-3)
        assert page.frequency == pytest.approx(freq[page.index], abs=1e-6)
        assert sum(full["freq_hist_data_bar_heights"]) == (col > 0).sum()
        first = full["activations"][0]                                     # Neuronpedia record of the top context
        assert first["values"][first["maxValueTokenIndex"]] == pytest.approx(col[order[0]], abs=1e-3)
        assert "[[" + ds.token(keep[order[0]]) + "]]" in page.top[0].text and page.top[0].row == keep[order[0]]
        for band in full["quantiles"]:                                     # samples come from the feature's firings
            for e in band:
                assert e["activation"] == pytest.approx(acts[np.searchsorted(keep, e["row"]), page.index], abs=1e-3)
        for key in ("pos_str", "pos_values", "neg_str", "neg_values", "frac_nonzero", "freq_hist_data_bar_heights",
                    "activations", "maxActApprox", "modelId", "layer", "index"):
            assert key in full
    report = lab.store.artifact_path(result.run_id, "report.html").read_text(encoding="utf-8")
    assert "Feature pages" in report and f"Feature {chosen[0]}" in report


def test_promoted_tokens_are_the_decoder_direction_through_final_norm_scale_and_unembedding(setup):
    lab, cap, fit, model = setup
    sae = load_sae_run(lab, fit)
    ds, _, acts = dense(lab, cap, fit)
    f = int(np.argmax((acts > 0).mean(0)))
    result = features(lab, cap, fit, features=[f])
    with lab.cache.lease(ModelRef(model=model)) as lm:
        w_u = lm.model.lm_head.weight.float()
        gamma = lm.model.transformer.ln_f.weight.float()
        logits = (sae.W_dec[f].detach() / sae.input_scale * gamma) @ w_u.T
        want_up = [lm.tokenizer.decode([int(i)]) for i in logits.topk(10).indices]
        want_down = [lm.tokenizer.decode([int(i)]) for i in (-logits).topk(10).indices]
    page = result.pages[0]
    assert [t.token for t in page.promoted] == want_up[:5] and [t.token for t in page.suppressed] == want_down[:5]
    full = json.loads(lab.store.artifact_path(result.run_id, f"features/{f}.json").read_text())
    assert full["pos_str"] == want_up and full["neg_str"] == want_down
    assert page.promoted[0].value == pytest.approx(float(logits.max()), rel=1e-3)


def test_listing_pages_with_a_cursor_through_every_feature_once(setup):
    lab, cap, fit, _ = setup
    seen, cursor = [], 0
    while cursor is not None:
        result = features(lab, cap, fit, sort="frequency", cursor=cursor, page_size=25, features=[0])
        seen += [r.index for r in result.listing]
        freqs = [r.frequency for r in result.listing]
        assert freqs == sorted(freqs, reverse=True)
        cursor = result.next_cursor
    assert sorted(seen) == list(range(64))


def test_prompt_features_equal_a_plain_forward_and_encode(setup):
    lab, cap, fit, model = setup
    text = "the king of france lives in paris"
    result = features(lab, cap, fit, prompt=text)
    sae = load_sae_run(lab, fit)
    with lab.cache.lease(ModelRef(model=model)) as lm, torch.no_grad():
        ids = lm.tokenizer(text).input_ids
        with recording(lm.model, lm.adapter, [SITE]) as store:
            lm.model(input_ids=torch.tensor([ids]))
        a = sae.encode(store[SITE][0].float())[1:]                  # position 0 left out
    best = a.max(0).values.double().numpy()
    ds, keep, acts = dense(lab, cap, fit)
    freq = np.maximum((acts > 0).mean(0), 1 / len(keep))
    score = best * np.log10(1 / freq)                           # activation x log10(1 / corpus density)
    late = (acts > 0).mean(0) > 0.1                             # dense ones after the rest
    want = sorted(np.nonzero(best > 0)[0].tolist(), key=lambda f: (late[f], -score[f], f))[:len(result.prompt_features)]
    assert [p.index for p in result.prompt_features] == want
    assert result.prompt_features[0].score == pytest.approx(float(score[want[0]]), rel=1e-3)
    assert [p.dense for p in result.prompt_features] == [bool(late[f]) for f in want]
    assert result.pages and result.pages[0].index == want[0]


def test_search_ranks_features_by_f1_on_the_matching_tokens_and_an_absent_text_finds_none(setup):
    lab, cap, fit, _ = setup
    ds, keep, acts = dense(lab, cap, fit)
    rows = match_rows(ds, "moon")
    assert len(rows) > 5 and all(ds.token(r).strip() == "moon" for r in rows)
    assert len(match_rows(ds, "the moon")) < len(rows)
    result = features(lab, cap, fit, search="moon")
    on = np.isin(keep, rows)
    fires = acts > 0
    recall = fires[on].sum(0) / on.sum()
    precision = fires[on].sum(0) / np.maximum(fires.sum(0), 1)
    f1 = np.where(fires[on].sum(0) > 0, 2 * recall * precision / np.maximum(recall + precision, 1e-12), 0)
    assert result.n_matches == on.sum()
    assert result.search_hits[0].index == int(np.argmax(f1))
    assert result.search_hits[0].f1 == pytest.approx(float(f1.max()), abs=1e-4)
    control = features(lab, cap, fit, search="zebra crossing")
    assert control.search_hits == [] and control.n_matches == 0


def test_bad_input_names_the_field(setup, tiny_gpt2):
    lab, cap, fit, model = setup
    with pytest.raises(InputError) as err:
        features(lab, cap, fit, features=[64])
    assert err.value.field == "features"
    with pytest.raises((InputError, NotFound)) as err:
        features(lab, cap, cap)                          # a capture run is not a dictionary
    assert err.value.field == "dictionary"
    other = run_capture(CaptureRequest(model=model, sites=["blocks.1.mlp.hook_post"], corpus="words.jsonl",
                                       context_size=16, max_tokens=160), lab=lab, reporter=NULL_REPORTER)
    with pytest.raises(InputError) as err:
        features(lab, other.run_id, fit)
    assert err.value.field == "capture_run_id"


# -- dense features: a planted always-on feature is flagged and not ranked top; a control ranks unchanged ----
def prompt_table(lab, result):
    return list(csv.DictReader(io.StringIO(lab.store.artifact_path(result.run_id, "tables/prompt_features.csv")
                                           .read_text(encoding="utf-8"))))


def test_a_planted_dense_feature_is_flagged_and_not_ranked_top_and_the_rest_rank_as_without_it(setup):
    lab, cap, fit, _ = setup
    text = "the king of france lives in paris"
    ref, PLANTED = planted_dense(lab, fit, "dense_sae")
    with_dense = features(lab, cap, ref, prompt=text, sort="max_activation")
    control = features(lab, cap, fit, prompt=text)
    # the planted feature fires on every row with activation 1000: the largest, the densest
    assert with_dense.listing[0].index == PLANTED and with_dense.listing[0].dense
    assert with_dense.listing[0].frequency == 1.0 and with_dense.n_dense == control.n_dense + 1
    table = prompt_table(lab, with_dense)
    ranked = [int(r["index"]) for r in table]
    assert PLANTED in ranked and ranked[0] != PLANTED                 # it fires on the prompt, yet is not top
    assert float(table[ranked.index(PLANTED)]["activation"]) == pytest.approx(1000.0, rel=1e-3)
    assert all(r["dense"] == "True" for r in table[ranked.index(PLANTED):])   # dense ones come last, loudest first
    assert table[ranked.index(PLANTED) - 1]["dense"] == "False"
    # control: without the planted feature the same features rank in the same order with the same scores
    rest = [(r["index"], r["score"]) for r in table if int(r["index"]) != PLANTED]
    assert rest == [(r["index"], r["score"]) for r in prompt_table(lab, control)][:len(rest)]
    assert with_dense.pages[0].index == control.pages[0].index != PLANTED
    assert f"Dense ones firing: {PLANTED} (1e+03, 100%)" in with_dense.summary          # named as a dense one firing
    assert PLANTED not in [p.index for p in features(lab, cap, ref).pages]   # default pages skip dense ones
    both = prompt_table(lab, features(lab, cap, ref, prompt=text, include_dense=True))
    scores = [float(r["score"]) for r in both]
    assert scores == sorted(scores, reverse=True)                     # include_dense: one ranking by score
