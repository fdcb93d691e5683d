"""Causal tracing: exact agreement with a per-cell loop and with TransformerLens, restoration
identities, determinism, known vs held-out facts on the shipped models, and input errors."""

import pytest
import torch

from neurotrace import TraceRequest, run_trace
from neurotrace.lab.errors import InputError
from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.embedded import embedded_model_path
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.forwards import sites_for, target_probs
from neurotrace.lab.tracing.grids.grid import Corrupted, approx_grid, exact_grid
from neurotrace.lab.tracing.noise import subject_noise_std
from neurotrace.lab.tracing.prepare import prepare_fact
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.reference import reference_cells

TINY_FACT = Fact(id="f0", template="the capital of {} is", clean_subject="france", corrupt_subject="spain",
                 target="paris", context_from="capital", context_to="river")


def _noise(lm, prep, samples=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    std = subject_noise_std(lm, [prep])
    n = prep.subject[1] - prep.subject[0]
    return Corrupted(prep.ids, torch.randn((samples, n, lm.d_model), generator=g) * 3 * std, prep.subject)


def reference_grid(lm, prep, corr, kind, window):
    """ROME's per-cell loop (neurotrace.testing.reference) laid out as a (layer, pos) grid."""
    cells = [(kind, layer, pos) for layer in range(lm.n_layers) for pos in range(len(prep.ids))]
    return torch.tensor(reference_cells(lm, prep, corr, cells, window)).view(lm.n_layers, len(prep.ids))


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama", "tiny_bert"])
@pytest.mark.parametrize("kind,window", [("resid", 1), ("mlp", 1), ("attn", 2)])
def test_exact_grid_equals_the_per_cell_loop(fixture, kind, window, request):
    lm = load(ModelRef(model=str(request.getfixturevalue(fixture))))
    prep = prepare_fact(lm, TINY_FACT, 0)
    corr = _noise(lm, prep)
    ours = exact_grid(lm, prep, corr, [kind], window, Reporter(), rows_per_batch=7)[kind]
    ref = reference_grid(lm, prep, corr, kind, window)
    assert (ours - ref).abs().max() <= 1e-4


def test_gpt2_uses_the_fast_path_and_llama_the_full_forward(tiny_gpt2, tiny_llama):
    from neurotrace.lab.tracing.grids.fast_gpt2 import supports_fast_path

    assert supports_fast_path(load(ModelRef(model=str(tiny_gpt2))))
    assert not supports_fast_path(load(ModelRef(model=str(tiny_llama))))


def test_swap_grid_equals_the_per_cell_loop(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2)))
    prep = prepare_fact(lm, TINY_FACT, 0)
    corr = Corrupted(prep.swap_ids, None, prep.subject)
    ours = exact_grid(lm, prep, corr, ["resid"], 1, Reporter())["resid"]
    assert (ours - reference_grid(lm, prep, corr, "resid", 1)).abs().max() <= 1e-4


def test_restoring_every_site_restores_the_clean_probability_exactly(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2)))
    prep = prepare_fact(lm, TINY_FACT, 0)
    corr = _noise(lm, prep)
    p_clean = target_probs(lm, prep.ids[None], prep.predict_pos, prep.target_id)
    grid = exact_grid(lm, prep, corr, ["resid"], 1, Reporter())["resid"]
    # the last layer's residual at the scored position is the whole model's output there
    torch.testing.assert_close(grid[-1, prep.predict_pos], p_clean[0], atol=1e-6, rtol=0)
    # restoring every layer at every position undoes the corruption entirely
    from neurotrace.lab.tracing.forwards import clean_states
    sites = sites_for("resid", 0, 1, lm.n_layers) + sites_for("resid", 1, 1, lm.n_layers)
    clean, _ = clean_states(lm, prep.ids, sites)

    def put(act, site):
        return clean[site][None].expand_as(act).clone()

    def noise(act, site):
        act = act.clone()
        act[:, prep.subject[0]:prep.subject[1]] += corr.noise
        return act

    p = target_probs(lm, corr.ids[None].expand(corr.samples, -1), prep.predict_pos, prep.target_id,
                     {"hook_embed": noise, **{s: put for s in sites}})
    torch.testing.assert_close(p, p_clean.expand_as(p), atol=1e-6, rtol=0)


def test_approx_grid_matches_exact_to_first_order_for_tiny_noise(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2)))
    prep = prepare_fact(lm, TINY_FACT, 0)
    corr = _noise(lm, prep)
    corr = Corrupted(corr.ids, corr.noise * 1e-3, corr.subject)
    p_corr = target_probs(lm, corr.ids[None].expand(3, -1), prep.predict_pos, prep.target_id,
                          {"hook_embed": lambda a, site: a.index_put((torch.arange(3)[:, None], torch.arange(*prep.subject)[None]),
                                                                      a[:, prep.subject[0]:prep.subject[1]] + corr.noise)}).mean()
    exact = exact_grid(lm, prep, corr, ["resid"], 1, Reporter())["resid"] - p_corr
    approx = approx_grid(lm, prep, corr, ["resid"], 1)["resid"]
    scale = exact.abs().max()
    assert scale > 0 and (exact - approx).abs().max() <= 0.05 * scale


def test_same_seed_gives_bit_identical_results_and_another_seed_differs(tmp_path, tiny_gpt2):
    lab = Lab(LabSettings(runs_dir=tmp_path))
    req = dict(models=[str(tiny_gpt2)], facts=[TINY_FACT], components=["resid", "mlp"], corruption={"kind": "noise", "samples": 2})
    a, b = (run_trace(TraceRequest(trace_unknown=True, **req, seed=3), lab=lab, reporter=Reporter()) for _ in range(2))
    c = run_trace(TraceRequest(trace_unknown=True, **req, seed=4), lab=lab, reporter=Reporter())
    ra, rb, rc = (lab.store.read_json(r.run_id, "trace_results.json")["models"][str(tiny_gpt2)]["facts"][0]
                  for r in (a, b, c))
    assert ra["restored"] == rb["restored"]
    assert ra["restored"] != rc["restored"]


def test_shipped_model_knows_a_trained_fact_and_not_a_held_out_one(tmp_path):
    path = embedded_model_path("fact-gpt2")
    if path is None:
        pytest.skip("embedded fact-gpt2 is absent")
    from neurotrace.lab.facts.packs import load_facts

    facts = load_facts(path)
    known = next(f for f in facts if not f.held_out and f.template == "The capital of {} is")
    unknown = next(f for f in facts if f.held_out and f.template == "The capital of {} is")
    lab = Lab(LabSettings(runs_dir=tmp_path))
    result = run_trace(TraceRequest(trace_unknown=True, models=["fact-gpt2"], facts=[known, unknown], corruption={"kind": "noise", "samples": 3}),
                       lab=lab, reporter=Reporter())
    k, u = lab.store.read_json(result.run_id, "trace_results.json")["models"]["fact-gpt2"]["facts"]
    assert k["correct"] and not u["correct"]
    assert k["p_clean"] > 0.5 > u["p_clean"]
    assert max(map(max, k["indirect"]["mlp"])) > max(map(max, u["indirect"]["mlp"]))
    assert result.models[0].unknown_facts == [unknown.id]


def test_facts_the_model_does_not_know_are_skipped_before_any_grid_unless_traced_as_a_control(tmp_path):
    """Issue 25 item 9: smollm2 spent 6.5 of 34 minutes tracing facts it did not know, though each was checked
    first. By default the check skips them (reported); trace_unknown keeps them as a control."""
    path = embedded_model_path("fact-gpt2")
    if path is None:
        pytest.skip("embedded fact-gpt2 is absent")
    from neurotrace.lab.facts.packs import load_facts

    facts = load_facts(path)
    known = next(f for f in facts if not f.held_out and f.template == "The capital of {} is")
    unknown = next(f for f in facts if f.held_out and f.template == "The capital of {} is")
    lab = Lab(LabSettings(runs_dir=tmp_path))
    totals = []
    reporter = Reporter(on_progress=lambda done, total, message: totals.append(total))
    req = dict(models=["fact-gpt2"], facts=[known, unknown], components=["mlp"], corruption={"kind": "swap"})
    result = run_trace(TraceRequest(**req), lab=lab, reporter=reporter)
    m = result.models[0]
    (skipped,) = m.skipped
    assert skipped.unknown and skipped.fact_id == unknown.id and "trace_unknown" in skipped.reason
    assert m.n_facts == 1 and m.n_known == 1 and m.unknown_facts == [unknown.id]
    assert "knows 1/2 checked facts; the 1 it does not know were not traced" in result.summary
    recorded = lab.store.read_json(result.run_id, "trace_results.json")["models"]["fact-gpt2"]["facts"]
    assert [f["fact_id"] for f in recorded] == [known.id]
    control_totals = []
    control = run_trace(TraceRequest(**req, trace_unknown=True), lab=lab,
                        reporter=Reporter(on_progress=lambda done, total, message: control_totals.append(total)))
    assert control.models[0].n_facts == 2 and control.models[0].skipped == []
    assert control.models[0].unknown_facts == [unknown.id] and control.models[0].n_known == 1
    assert max(t or 0 for t in totals) < max(t or 0 for t in control_totals)   # planned without the unknown's grid
    with raises_lab_error(InputError) as err:
        TraceRequest(**req, trace_unknown=True, rome_compat=True)
    assert err.value.field == "trace_unknown"


def test_resid_patching_agrees_with_transformerlens_patching(tiny_gpt2):
    from transformer_lens import patching

    lm = load(ModelRef(model=str(tiny_gpt2), backend="bridge"))
    prep = prepare_fact(lm, TINY_FACT, 0)
    corr = Corrupted(prep.swap_ids, None, prep.subject)
    ours = exact_grid(lm, prep, corr, ["resid"], 1, Reporter())["resid"]
    _, cache = lm.bridge.run_with_cache(prep.ids[None])

    def metric(logits):
        return torch.softmax(logits[0, prep.predict_pos], -1)[prep.target_id]

    tl = patching.get_act_patch_resid_pre(lm.bridge, prep.swap_ids[None], cache, metric)  # (layer, pos)
    assert (tl[1:] - ours[:-1]).abs().max() <= 1e-4


def test_input_errors_name_their_field(tmp_path, tiny_gpt2):
    lab = Lab(LabSettings(runs_dir=tmp_path))
    with raises_lab_error(InputError) as err:
        TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)])
    assert err.value.field == "facts"
    with raises_lab_error(InputError) as err:
        run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=[TINY_FACT], window=9), lab=lab, reporter=Reporter())
    assert err.value.field == "window"
    bad = TINY_FACT.model_copy(update={"corrupt_subject": "the big old"})
    with raises_lab_error(InputError) as err:
        run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=[bad], corruption={"kind": "swap"}), lab=lab,
                  reporter=Reporter())
    assert err.value.field == "facts[0].corrupt_subject"
    oov = TINY_FACT.model_copy(update={"target": "zzzz"})
    with raises_lab_error(InputError) as err:
        run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=[oov]), lab=lab, reporter=Reporter())
    assert err.value.field == "facts[0].target"
    with pytest.raises(ValueError, match="components"):
        TraceRequest(trace_unknown=True, models=["x"], facts=[TINY_FACT], components=["embed"])


def test_cancellation_mid_run_marks_the_run_cancelled(tmp_path, tiny_gpt2):
    from neurotrace.lab.errors import Cancelled

    lab = Lab(LabSettings(runs_dir=tmp_path))
    reporter = Reporter()
    reporter.on_progress = lambda done, total, msg: reporter.cancel()
    with pytest.raises(Cancelled):
        run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=[TINY_FACT, TINY_FACT]), lab=lab, reporter=reporter)
    assert lab.store.list_runs()[0].status == "cancelled"


def test_fast_path_equals_the_full_forward_path_on_the_shipped_model_with_windows():
    path = embedded_model_path("fact-gpt2")
    if path is None:
        pytest.skip("embedded fact-gpt2 is absent")
    from neurotrace.lab.facts.packs import load_facts
    from neurotrace.lab.tracing.grids.fast_gpt2 import supports_fast_path

    lm = load(ModelRef(model="fact-gpt2"))
    assert supports_fast_path(lm)
    fact = next(f for f in load_facts(path) if not f.held_out)
    prep = prepare_fact(lm, fact, 0)
    corr = _noise(lm, prep, samples=4)
    components = ["resid", "mlp", "attn"]
    fast = exact_grid(lm, prep, corr, components, 3, Reporter(), rows_per_batch=50)
    full = exact_grid(lm, prep, corr, components, 3, Reporter(), force_full=True)
    for k in components:
        assert (fast[k] - full[k]).abs().max() <= 1e-5
