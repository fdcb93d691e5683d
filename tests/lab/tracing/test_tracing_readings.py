"""The trace reading says what the averages say: n per category, half-maximum ranges instead of a bare
argmax, the hand-off and arrival layers, no layer for an effect below the minimum, a layer-0 window
artifact flagged, MLP against attention at the same token category, and words that fit the model kind.
Synthetic records with known answers, so each reading can be checked by hand."""

import pytest
import torch

from neurotrace.lab.tracing.readings import MIN_EFFECT, ModelInfo, category, summarize_model
from neurotrace.lab.tracing.report import cross_model, interpret, model_lines, model_trace
from neurotrace.lab.tracing.schema import FactCurves, FactPeak, FactRecord, TraceRequest

N_LAYERS = 6


def record(grids: dict[str, list[list[float]]], subject=(1, 3), n_tokens=5, p_clean=0.9, p_corr=0.1,
           curves: FactCurves | None = None, fact_id="f", correct=True) -> FactRecord:
    """A fact with given (layer, pos) indirect-effect grids; the last token is scored."""
    cats = [category(p, subject[0], subject[1], n_tokens - 1) for p in range(n_tokens)]
    return FactRecord(fact_id=fact_id, prompt="p", subject="s", target="t", target_id=0, tokens=["x"] * n_tokens,
                      subject_range=list(subject), predict_pos=n_tokens - 1, categories=cats, p_clean=p_clean,
                      p_corrupted=p_corr, clean_minus_corrupt=p_clean - p_corr, correct=correct, top_token="t",
                      restored={k: (torch.tensor(v) + p_corr).tolist() for k, v in grids.items()}, indirect=grids,
                      peak=FactPeak(component="resid", layer=0, pos=0, token="x", effect=0.0),
                      curves=curves or FactCurves())


def grid(values_at: dict[int, list[float]], n_tokens=5) -> list[list[float]]:
    """(layer, pos) zeros except the given per-layer columns."""
    g = torch.zeros(len(next(iter(values_at.values()))), n_tokens)
    for pos, col in values_at.items():
        g[:, pos] = torch.tensor(col)
    return g.tolist()


def model(facts, components=("resid", "mlp", "attn"), window=1, corruption=None, kind="causal", name="m",
          n_layers=N_LAYERS):
    req = TraceRequest(models=[name], pack="geography", components=list(components), window=window,
                       corruption=corruption or {"kind": "swap"})
    info = ModelInfo(name, kind, "gpt2", n_layers, 4, "fp", window, None, "none")
    return summarize_model(req, info, facts, [])


ZERO = [0.0] * N_LAYERS


def test_a_flat_stretch_is_a_range_with_its_band_and_n_not_a_peak_layer():
    facts = [record({"resid": grid({2: [0.58, 0.58, 0.58, 0.58, 0.2, 0.0], 4: [0.0, 0.1, 0.3, 0.5, 0.7, 0.8]})},
                    fact_id=f"f{i}") for i in range(3)]
    m = model(facts, components=("resid",))
    r = next(r for r in m.readings.ranges if r.component == "resid" and r.position == "last subject token")
    assert (r.first, r.last, r.n) == (0, 3, 3) and r.band == 0.0
    assert m.peak.position == "last subject token" and (m.peak.first, m.peak.last) == (0, 3)
    text = " ".join(interpret([m]))
    assert "layers 0-3" in text and "n=3" in text


def testcategory_averages_are_over_the_facts_that_have_thecategory_and_say_n():
    two_token = record({"mlp": grid({1: [0.4] * N_LAYERS, 2: [0.2] * N_LAYERS})}, subject=(1, 3))
    one_token = record({"mlp": grid({2: [0.6] * N_LAYERS})}, subject=(2, 3), fact_id="g")
    m = model([two_token, one_token], components=("mlp",))
    n = dict(zip(m.readings.buckets, m.readings.bucket_n, strict=True))
    assert n["first subject token"] == 1 and n["last subject token"] == 2
    first = m.readings.buckets.index("first subject token")
    assert m.aie["mlp"][0][first] == pytest.approx(0.4)           # one fact's value, not a mean over two


def test_the_hand_off_and_the_arrival_layer_of_the_answer_at_the_last_token():
    subj = [0.7, 0.6, 0.4, 0.2, 0.1, 0.0]
    last = [0.0, 0.1, 0.3, 0.5, 0.7, 0.8]
    m = model([record({"resid": grid({2: subj, 4: last})})], components=("resid",))
    assert m.readings.handoff_layer == 3                           # the first layer where the last token catches up
    assert m.readings.arrival_layer == 3                           # half the total effect 0.8 = 0.4
    text = " ".join(interpret([m]))
    assert "arrives at the last token by layer 3" in text and "mask" not in text and "trivial" not in text


def test_masked_models_read_the_mask_and_causal_models_never_mention_mask_patching():
    facts = [record({"resid": grid({2: [0.5] * N_LAYERS, 4: [0.0, 0.2, 0.5, 0.8, 0.8, 0.8]})})]
    masked = " ".join(interpret([model(facts, components=("resid",), kind="masked")]))
    causal = " ".join(interpret([model(facts, components=("resid",))]))
    assert "at the mask" in masked and "mask" not in causal


def test_a_context_swap_below_the_minimum_effect_names_no_layer():
    tiny = FactCurves(context_patch=[0.9] * N_LAYERS, context_p_corrupted=0.899, context_clean_minus_corrupt=0.001)
    m = model([record({"resid": grid({2: [0.5] * N_LAYERS})}, curves=tiny)], components=("resid",))
    assert m.readings.context.measurable is False and m.readings.context.until_layer is None
    text = " ".join(interpret([m]))
    assert "no measurable context effect" in text and "matters until" not in text
    real = FactCurves(context_patch=[0.9, 0.9, 0.8, 0.5, 0.4, 0.4], context_p_corrupted=0.4,
                      context_clean_minus_corrupt=0.5)
    m = model([record({"resid": grid({2: [0.5] * N_LAYERS})}, curves=real)], components=("resid",))
    assert m.readings.context.until_layer == 2 and MIN_EFFECT < m.readings.context.effect


def test_a_peak_reached_only_by_windows_with_layer_0_under_noise_is_flagged_with_the_rerun():
    mlp = grid({2: [0.5, 0.3, 0.05, 0.05, 0.05, 0.05]})
    noisy = model([record({"mlp": mlp})], components=("mlp",), window=3, corruption={"kind": "noise"})
    assert noisy.readings.layer0_artifact == ["mlp"]
    text = " ".join(interpret([noisy]))
    assert "window 1 or corruption swap" in text
    swapped = model([record({"mlp": mlp})], components=("mlp",), window=3)
    assert swapped.readings.layer0_artifact == []
    later = grid({2: [0.5, 0.3, 0.05, 0.45, 0.05, 0.05]})
    assert model([record({"mlp": later})], components=("mlp",), window=3,
                 corruption={"kind": "noise"}).readings.layer0_artifact == []


def test_an_mlp0_only_subject_effect_under_swap_reads_as_an_extended_embedding_not_storage():
    """Issue 25 item 6: SmolLM2 under subject swap read 'MLP 0.863 (layer 0)' at the last subject token with
    every other layer 0.00, and no caution; that is MLP0 detokenising the subject, and the reading says so."""
    mlp0 = grid({2: [0.86, 0.0, 0.0, 0.0, 0.0, 0.0]})
    swapped = model([record({"mlp": mlp0})], components=("mlp",), window=1)
    assert swapped.readings.layer0_embedding == ["mlp"] and swapped.readings.layer0_artifact == []
    text = " ".join(interpret([swapped]))
    assert "extended embedding" in text and "not storage" in text and "Rule:" in text
    wide = model([record({"mlp": grid({2: [0.86, 0.8, 0.0, 0.0, 0.0, 0.0]})})], components=("mlp",), window=3)
    assert wide.readings.layer0_embedding == ["mlp"]                  # windows 0 and 1 both contain layer 0
    stored = model([record({"mlp": grid({2: [0.86, 0.0, 0.0, 0.6, 0.0, 0.0]})})], components=("mlp",), window=1)
    assert stored.readings.layer0_embedding == [] and "extended embedding" not in " ".join(interpret([stored]))
    scored_only = model([record({"mlp": grid({4: [0.86, 0.0, 0.0, 0.0, 0.0, 0.0]})})], components=("mlp",))
    assert scored_only.readings.layer0_embedding == []              # not at the subject
    noisy = model([record({"mlp": mlp0})], components=("mlp",), window=1, corruption={"kind": "noise"})
    text = " ".join(interpret([noisy]))
    assert noisy.readings.layer0_artifact == ["mlp"] and "extended embedding" not in text   # noise's own caution


def test_mlp_and_attention_are_compared_at_the_same_token_category():
    facts = [record({"mlp": grid({2: [0.0, 0.4, 0.5, 0.1, 0.0, 0.0], 4: [0.05] * N_LAYERS}),
                     "attn": grid({2: [0.01] * N_LAYERS, 4: [0.0, 0.0, 0.0, 0.3, 0.6, 0.2]})})]
    text = " ".join(interpret([model(facts, components=("mlp", "attn"))]))
    assert "at the last subject token MLP leads: MLP 0.500 (layers 1-2) vs attention < 0.02" in text
    assert "at the scored token attention leads: MLP 0.050 (layers 0-5) vs attention 0.600 (layers 3-4)" in text


def test_unknown_facts_are_left_out_of_every_average():
    known = record({"mlp": grid({2: [0.5] * N_LAYERS})})
    unknown = record({"mlp": grid({2: [0.9] * N_LAYERS})}, fact_id="u", correct=False)
    m = model([known, unknown], components=("mlp",))
    assert m.n_known == 1 and m.unknown_facts == ["u"] and m.peak.effect == 0.5


def test_mean_p_clean_says_whether_it_is_over_the_known_facts():
    known = record({"mlp": grid({2: [0.5] * N_LAYERS})}, p_clean=0.9, p_corr=0.1)
    unknown = record({"mlp": grid({2: [0.0] * N_LAYERS})}, fact_id="u", correct=False, p_clean=0.05, p_corr=0.03)
    m = model([known, unknown], components=("mlp",))
    trace = model_trace(m)
    assert trace.mean_p_clean == pytest.approx(0.475) and trace.mean_p_corrupted == pytest.approx(0.065)
    assert trace.mean_p_clean_known == pytest.approx(0.9) and trace.mean_p_corrupted_known == pytest.approx(0.1)
    assert "Mean p(target) over the 1 known fact: 0.900 clean vs 0.100 corrupted" in model_lines(m)[0]
    assert model_trace(model([unknown], components=("mlp",))).mean_p_clean_known is None


def test_models_of_different_depths_are_compared_by_relative_depth_on_the_same_kind_and_category():
    shallow = model([record({"mlp": grid({2: [0.1, 0.2, 0.6, 0.2, 0.1, 0.0]})})], components=("mlp",), name="six")
    deep = model([record({"mlp": grid({2: [0.0] * 4 + [0.2, 0.3, 0.5, 0.3] + [0.0] * 4})})], components=("mlp",),
                 name="twelve", n_layers=12)
    text = cross_model([shallow, deep])
    assert "relative depth (layer / n_layers)" in text and "mlp at the last subject token" in text
    assert "layer 2/6 (depth 0.33)" in text and "layer 6/12 (depth 0.50)" in text
    assert "peak bands overlap" in text           # one-layer half-max range [0.33, 0.50) vs layers 5-7 [0.42, 0.67)
    same = cross_model([shallow, model(shallow.facts, components=("mlp",), name="other")])
    assert "relative depth" not in same and "about the same depth" in same


def test_a_fact_whose_subject_effect_peaks_before_the_last_subject_token_is_named_in_the_summary():
    """The averages read the last subject token (ROME); fact by fact the effect can sit on an earlier one
    (SmolLM2's 'The Eiffel Tower' peaks at 'iffel'), and the summary says which facts and tokens."""
    early = record({"mlp": grid({1: [0.5] * N_LAYERS, 2: [0.1] * N_LAYERS})}, fact_id="eiffel")
    early = early.model_copy(update={"tokens": ["The", " E", "iffel", " is", " in"]})
    late = [record({"mlp": grid({1: [0.1] * N_LAYERS, 2: [0.4] * N_LAYERS})}, fact_id=f"f{i}") for i in range(2)]
    one_token = record({"mlp": grid({2: [0.6] * N_LAYERS})}, subject=(2, 3), fact_id="one")
    flat = record({"mlp": grid({1: [0.01] * N_LAYERS})}, fact_id="flat")
    m = model([early, *late, one_token, flat], components=("mlp",))
    (r,) = m.readings.subject_tokens
    assert (r.component, r.n_facts, r.at_last, r.earlier) == ("mlp", 3, 2, ["eiffel: ' E'"])
    assert "peaks before the last subject token in mlp 1 of 3 (eiffel: ' E')" in " ".join(interpret([m]))
    quiet = model(late, components=("mlp",))
    assert quiet.readings.subject_tokens[0].at_last == 2 and "peaks before" not in " ".join(interpret([quiet]))


def _resid(col: list[float], name: str, fingerprint: str = "fp"):
    m = model([record({"resid": grid({2: col})})], components=("resid",), name=name)
    return m.model_copy(update={"fingerprint": fingerprint})


def test_two_runs_of_one_model_are_read_as_settings_not_models_and_overlapping_ranges_are_no_depth_difference():
    noise = _resid([0.8, 0.7, 0.6, 0.5, 0.1, 0.0], "m (noise)")               # peak layer 0, half-max 0-3
    swap = _resid([0.5, 0.6, 0.7, 0.8, 0.6, 0.1], "m (swap)")                 # peak layer 3, half-max 0-4
    text = cross_model([noise, swap])
    assert text.startswith("Same model, different settings") and "Across models" not in text
    assert "layers 0-3" in text and "layers 0-4" in text and "peak bands overlap" in text
    assert "different depths:" not in text and "route" not in text


def test_different_models_sit_at_different_depths_only_when_their_half_max_ranges_are_disjoint():
    early = _resid([0.8, 0.7, 0.6, 0.5, 0.1, 0.0], "early", "a")
    broad = _resid([0.5, 0.6, 0.7, 0.8, 0.6, 0.1], "broad", "b")
    late = _resid([0.0, 0.0, 0.0, 0.1, 0.3, 0.8], "late", "c")                # half-max layer 5 only
    overlapping = cross_model([early, broad])
    assert overlapping.startswith("Across models") and "peak bands overlap" in overlapping
    assert "different depths:" not in overlapping
    apart = cross_model([early, late])
    assert "different depths (their peak bands exclude each other): the models route these facts differently" in apart
    three = cross_model([early, broad, late])
    assert "Different depths only for early vs late, broad vs late (their peak bands exclude each other)" in three
    assert "early vs broad" not in three


def test_compare_calls_peaks_different_only_when_their_bands_exclude_each_other():
    """Issue 25 item 5: gemma (18 layers) and smollm2 (30) read as routing facts differently because two one-layer
    half-max ranges (depth 0.67 vs 0.77) do not overlap; their windows and bands do."""
    def attn(n_layers, at, window, name):
        col = [0.0] * n_layers
        col[at - 1], col[at], col[at + 1] = 0.2, 0.5, 0.2
        m = model([record({"attn": grid({2: col})})], components=("attn",), window=window, name=name,
                  n_layers=n_layers)
        return m.model_copy(update={"fingerprint": name})

    text = cross_model([attn(18, 12, 4, "gemma"), attn(30, 23, 6, "smol")])
    assert "layer 12/18 (depth 0.67)" in text and "layer 23/30 (depth 0.77)" in text
    assert "peak bands overlap" in text and "route these facts differently" not in text
    assert "exclude each other" in cross_model([attn(18, 3, 1, "early"), attn(30, 25, 1, "late")])  # far apart

    def resid(facts_cols, name):
        m = model([record({"resid": grid({2: c})}, fact_id=f"f{i}") for i, c in enumerate(facts_cols)],
                  components=("resid",), name=name)
        return m.model_copy(update={"fingerprint": name})

    noisy_a = resid([[0, 0.9, 0, 0, 0, 0], [0, 0.1, 0, 0, 0.6, 0], [0, 0.5, 0, 0, 0, 0]], "a")   # half-max layer 1
    noisy_b = resid([[0, 0, 0, 0, 0.9, 0], [0, 0.6, 0, 0, 0.1, 0], [0, 0, 0, 0, 0.5, 0]], "b")   # half-max layer 4
    assert [r.first for r in noisy_a.readings.ranges] == [1] and [r.first for r in noisy_b.readings.ranges] == [4]
    wide = cross_model([noisy_a, noisy_b])
    assert "peak bands overlap" in wide and "exclude each other" not in wide
    tight_a = resid([[0, 0.5, 0, 0, 0.2, 0]] * 3, "ta")
    tight_b = resid([[0, 0.2, 0, 0, 0.5, 0]] * 3, "tb")
    assert "different depths (their peak bands exclude each other)" in cross_model([tight_a, tight_b])


def test_compare_figures_set_the_same_component_against_the_same_component():
    from neurotrace.lab.tracing.figures import layer_model_heatmap, peak_bars
    from neurotrace.lab.tracing.schema import TraceResults

    by_attn = model([record({"attn": grid({2: [0, 0, 0.6, 0, 0, 0]}), "resid": grid({2: [0.1] * N_LAYERS})})],
                    components=("resid", "attn"), name="g")
    by_resid = model([record({"attn": grid({2: [0, 0.2, 0, 0, 0, 0]}), "resid": grid({2: [0.9] * N_LAYERS})})],
                     components=("resid", "attn"), name="s")
    assert (by_attn.peak.component, by_resid.peak.component) == ("attn", "resid")
    res = TraceResults(fact_set="f", mode="exact", components=["resid", "attn"], corruption={"kind": "swap"}, seed=0,
                       models={"g": by_attn, "s": by_resid})
    heat = layer_model_heatmap(res)
    rows = [t.get_text() for t in heat.axes[0].get_yticklabels()]
    assert rows == ["g: attn", "s: attn"]
    assert float(heat.axes[0].images[0].get_array()[1].max()) == pytest.approx(0.2)   # s's attn row, not its resid
    bars = peak_bars(res)
    heights = [p.get_height() for p in bars.axes[0].patches]
    assert heights == pytest.approx([0.6, 0.2]) and "attn at the last subject token" in bars._suptitle.get_text()


def test_the_95_percent_band_uses_students_t_for_few_facts_and_rome_s_normal_band_under_rome_compat():
    from neurotrace.lab.tracing.readings import average, t975

    rows = [[[torch.full((N_LAYERS,), v)]] + [[] for _ in range(7)] for v in (0.2, 0.6)]   # 2 facts, category 0
    sample_sd = float(torch.tensor([0.2, 0.6]).std())
    assert float(average(rows, N_LAYERS, 8, rome=False).band[0, 0]) == pytest.approx(12.706 * sample_sd / 2 ** 0.5)
    assert float(average(rows, N_LAYERS, 8, rome=True).band[0, 0]) == pytest.approx(1.96 * 0.2 / 2 ** 0.5)
    assert t975(4) == 2.776 and t975(200) == pytest.approx(1.972, abs=1e-3) and t975(10**6) == pytest.approx(1.96, abs=1e-3)


def test_the_flow_figure_draws_every_kind_on_one_size_scale_with_a_size_legend():
    from neurotrace.lab.tracing.figures import flow
    from neurotrace.lab.tracing.schema import TraceResults

    strong = grid({2: [0.8, 0.6, 0.4, 0.2, 0.0, 0.0]})
    weak = grid({4: [0.0, 0.0, 0.0, 0.1, 0.2, 0.0]})                           # a quarter of the strongest effect
    m = model([record({"resid": strong, "attn": weak})], components=("resid", "attn"))
    res = TraceResults(fact_set="geography", mode="exact", components=["resid", "attn"], corruption={"kind": "swap"},
                       seed=0, models={"m": m})
    fig = flow(res)
    ax = fig.axes[0]
    resid, attn = (max(c.get_sizes()) for c in ax.collections[:2])
    assert attn < resid / 2                                                   # not each row scaled to its own max
    legends = [c for c in ax.get_children() if type(c).__name__ == "Legend"]
    titles = {lg.get_title().get_text() for lg in legends}
    assert "effect" in titles and len(legends) == 2                          # sizes, and the peak line's
