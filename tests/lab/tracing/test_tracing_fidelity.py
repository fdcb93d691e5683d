"""Trace fidelity: a fact's numbers never depend on its companions, the noise unit is per model (and
right for scaled embeddings), ROME's conventions on request, untraceable facts skipped before compute,
partial results of a cancelled run readable, and the typed records round-trip."""

import numpy as np
import pytest
import torch

from neurotrace import TraceRequest, run_trace
from neurotrace.lab.errors import Cancelled
from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.facts.packs import load_facts
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.access.tokens import token_ids
from neurotrace.lab.model.weights.embedded import embedded_model_path
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.figures import FIGURES
from neurotrace.lab.tracing.grids.grid import Corrupted, exact_grid
from neurotrace.lab.tracing.noise import embedding_std, fact_seed, subjects_alone_std
from neurotrace.lab.tracing.prepare import prepare_fact
from neurotrace.lab.tracing.schema import ROME_BUCKETS, TokenCategory, TraceResults
from neurotrace.testing.tiny import build_tiny

FACTS = [Fact(id="fr", template="the capital of {} is", clean_subject="france", corrupt_subject="spain", target="paris"),
         Fact(id="it", template="the capital of {} is", clean_subject="italy", corrupt_subject="japan", target="rome"),
         Fact(id="de", template="the big capital of {} is", clean_subject="germany", corrupt_subject="england",
              target="berlin")]
NOISE = {"kind": "noise", "samples": 2}


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def _facts(lab, result, model):
    return {f["fact_id"]: f for f in lab.store.read_json(result.run_id, "trace_results.json")["models"][str(model)]["facts"]}


def test_a_fact_gives_identical_numbers_alone_first_last_and_among_others(lab, tiny_gpt2):
    base = dict(models=[str(tiny_gpt2)], components=["resid", "mlp"], corruption=NOISE, seed=5)
    orders = [[FACTS[0]], [FACTS[0], FACTS[1], FACTS[2]], [FACTS[2], FACTS[1], FACTS[0]], [FACTS[1], FACTS[0], FACTS[2]]]
    runs = [_facts(lab, run_trace(TraceRequest(trace_unknown=True, **base, facts=o), lab=lab), tiny_gpt2)["fr"] for o in orders]
    for r in runs[1:]:
        assert r["p_corrupted"] == runs[0]["p_corrupted"]
        assert r["restored"] == runs[0]["restored"]
        assert r["noise_seed"] == runs[0]["noise_seed"] == fact_seed(5, FACTS[0])


def test_the_noise_unit_is_recorded_and_does_not_move_with_max_facts(lab, tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2)))
    a = run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=FACTS, components=["resid"], corruption=NOISE), lab=lab)
    b = run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=FACTS, max_facts=1, components=["resid"], corruption=NOISE),
                  lab=lab)
    assert a.models[0].noise_std == b.models[0].noise_std == pytest.approx(embedding_std(lm), rel=1e-12)
    given = run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=FACTS[:1], components=["resid"], corruption=NOISE,
                                   noise_std_from=0.5), lab=lab)
    assert given.models[0].noise_std == 0.5
    assert given.models[0].readings.bucket_n and "0.5" in given.summary


def test_the_embedding_unit_is_measured_where_the_noise_is_added_so_gemma_scaling_counts(tmp_path):
    lm = load(ModelRef(model=str(build_tiny("gemma3_text", tmp_path / "gemma"))))
    emb = lm.adapter.module(lm.model, lm.adapter.embed)
    with torch.no_grad():
        out = emb(torch.arange(emb.weight.shape[0])[None])[0]
    assert embedding_std(lm) == pytest.approx(float(out.double().std()), rel=1e-6)
    scale = lm.d_model ** 0.5                       # Gemma multiplies by sqrt(d_model) inside the module
    assert embedding_std(lm) == pytest.approx(float(emb.weight.double().std()) * scale, rel=1e-3)


def test_dataset_unit_is_romes_std_over_subjects_tokenized_alone(lab, tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2)))
    emb = lm.adapter.module(lm.model, lm.adapter.embed)
    with torch.no_grad():
        rows = torch.cat([emb(torch.tensor(token_ids(lm.tokenizer, f.clean_subject))[None])[0] for f in FACTS])
    assert subjects_alone_std(lm, [f.clean_subject for f in FACTS]) == pytest.approx(float(rows.std()), rel=1e-6)
    result = run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=FACTS, max_facts=1, components=["resid"],
                                    corruption=NOISE, noise_std_from="dataset"), lab=lab)
    assert result.models[0].noise_std == pytest.approx(float(rows.std()), rel=1e-6)   # all facts, not max_facts


def test_rome_compat_uses_one_noise_draw_window_10_romes_buckets_and_skips_unknown_facts(lab):
    path = embedded_model_path("fact-gpt2")
    if path is None:
        pytest.skip("embedded fact-gpt2 is absent")
    facts = load_facts(path)
    known = [f for f in facts if not f.held_out and f.template == "The capital of {} is"][:2]
    unknown = next(f for f in facts if f.held_out and f.template == "The capital of {} is")
    lm = load(ModelRef(model="fact-gpt2"))
    result = run_trace(TraceRequest(models=["fact-gpt2"], facts=[*known, unknown], components=["mlp"], rome_compat=True,
                                    corruption=NOISE), lab=lab)
    trace = result.models[0]
    assert trace.window == 10 and trace.readings.buckets == ROME_BUCKETS and trace.n_known == 2
    assert [s.fact_id for s in trace.skipped] == [unknown.id] and "unknown" in trace.skipped[0].reason
    unit = subjects_alone_std(lm, [f.clean_subject for f in [*known, unknown]])
    assert trace.noise_std == pytest.approx(unit, rel=1e-9)
    records = _facts(lab, result, "fact-gpt2")
    for f in known:
        prep = prepare_fact(lm, f, 0)
        noise = torch.from_numpy(np.random.RandomState(1).randn(2, prep.subject[1] - prep.subject[0], lm.d_model))
        corr = Corrupted(prep.ids, noise.float() * (3 * unit), prep.subject)
        expected = exact_grid(lm, prep, corr, ["mlp"], 10, Reporter())["mlp"]
        assert torch.tensor(records[f.id]["restored"]["mlp"]).allclose(expected, atol=1e-7, rtol=0)
        assert records[f.id]["noise_seed"] is None


def test_an_untraceable_fact_is_skipped_and_listed_while_the_others_are_traced(lab, tiny_gpt2):
    bad = FACTS[1].model_copy(update={"corrupt_subject": "the big old"})
    result = run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=[FACTS[0], bad], components=["resid"],
                                    corruption={"kind": "swap"}), lab=lab)
    trace = result.models[0]
    assert trace.n_facts == 1 and [s.fact_id for s in trace.skipped] == ["it"]
    assert trace.skipped[0].field == "facts[1].corrupt_subject" and "skipped" in result.summary


def test_a_cancelled_run_keeps_the_facts_it_finished_readable_and_drawable(lab, tiny_gpt2):
    reporter = Reporter()
    reporter.on_progress = lambda done, total, msg: reporter.cancel() if msg.endswith(": fact 1/3") else None
    with pytest.raises(Cancelled):
        run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=FACTS, components=["resid", "mlp"], corruption=NOISE),
                  lab=lab, reporter=reporter)
    manifest = lab.store.list_runs()[0]
    assert manifest.status == "cancelled"
    raw = lab.store.read_json(manifest.run_id, "trace_results.json")
    results = TraceResults.model_validate(raw)
    assert results.status == "partial" and [f.fact_id for f in results.models[str(tiny_gpt2)].facts] == ["fr"]
    assert FIGURES["heatmap"](raw) is not None and FIGURES["aie"](raw) is not None


def test_trace_results_round_trip_through_the_typed_records(lab, tiny_gpt2):
    result = run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=FACTS[:1], components=["resid"], heads=True,
                                    corruption={"kind": "swap"}), lab=lab)
    raw = lab.store.read_json(result.run_id, "trace_results.json")
    results = TraceResults.model_validate(raw)
    fact = results.models[str(tiny_gpt2)].facts[0]
    assert fact.categories[fact.predict_pos] is TokenCategory.SCORED
    assert fact.categories[fact.subject_range[1] - 1] is TokenCategory.LAST_SUBJECT
    assert TraceResults.model_validate(results.model_dump(mode="json")) == results
    assert all(FIGURES[k](raw) is not None for k in FIGURES)
