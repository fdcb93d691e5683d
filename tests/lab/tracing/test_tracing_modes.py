"""trace's other modes end to end on tiny models: approximate mode with its agreement, head patching,
masked LMs without a mask token, compare's merging and input errors, and the GPT-2 fast path with
wide windows against the per-cell loop."""

import pytest
import torch

from neurotrace import CompareRequest, PlotRequest, TraceRequest, run_compare, run_plot, run_trace
from neurotrace.lab.errors import InputError
from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.prepare import prepare_fact
from neurotrace.testing.errors import raises_lab_error

FACT = Fact(id="f0", template="the capital of {} is", clean_subject="france", corrupt_subject="spain",
            target="paris", context_from="capital", context_to="river")
NOISE = {"kind": "noise", "samples": 2}


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def _fact_results(lab, result, model):
    return lab.store.read_json(result.run_id, "trace_results.json")["models"][str(model)]["facts"][0]


def test_approx_mode_reports_its_agreement_and_keeps_the_exact_grid(lab, tiny_gpt2):
    req = dict(models=[str(tiny_gpt2)], facts=[FACT], components=["resid", "mlp"], corruption=NOISE, seed=1)
    checked = run_trace(TraceRequest(trace_unknown=True, **req, mode="approx", check_agreement=True), lab=lab, reporter=Reporter())
    exact = run_trace(TraceRequest(trace_unknown=True, **req), lab=lab, reporter=Reporter())
    agreement = checked.agreement[str(tiny_gpt2)]
    assert set(agreement) == {"resid", "mlp"}
    assert agreement["mlp"]["mean_pearson_r"] > 0.9 and 0 <= agreement["mlp"]["same_peak_fraction"] <= 1
    assert agreement["mlp"]["mean_spearman"] > 0.5 and 0.5 <= agreement["mlp"]["mean_top10_overlap"] <= 1
    f_checked, f_exact = _fact_results(lab, checked, tiny_gpt2), _fact_results(lab, exact, tiny_gpt2)
    assert f_checked["restored"] == f_exact["restored"]          # the exact grid is what is reported
    approx = torch.tensor(f_checked["approx_indirect"]["mlp"])
    diff = (approx - torch.tensor(f_exact["indirect"]["mlp"])).abs().max()
    assert float(diff) == pytest.approx(agreement["mlp"]["max_abs_diff"], rel=1e-6)


def test_approx_mode_alone_reports_the_attribution_estimate(lab, tiny_gpt2):
    result = run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=[FACT], components=["attn"], corruption=NOISE,
                                    mode="approx"), lab=lab, reporter=Reporter())
    f = _fact_results(lab, result, tiny_gpt2)
    assert result.agreement is None
    torch.testing.assert_close(torch.tensor(f["indirect"]["attn"]), torch.tensor(f["approx_indirect"]["attn"]),
                               atol=1e-6, rtol=0)
    assert f["peak"]["component"] == "attn"


def test_head_patching_gives_one_value_per_layer_and_head(lab, tiny_gpt2):
    result = run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=[FACT], components=["resid"], heads=True,
                                    corruption={"kind": "swap"}), lab=lab, reporter=Reporter())
    lm = load(ModelRef(model=str(tiny_gpt2)))
    heads = torch.tensor(_fact_results(lab, result, tiny_gpt2)["heads"])
    assert heads.shape == (lm.n_layers, lm.n_heads)
    assert heads.std() > 0


def test_masked_model_without_mask_token_is_refused_before_any_compute(tmp_path, lab, tiny_bert):
    import json
    import shutil

    path = tmp_path / "no-mask"
    shutil.copytree(tiny_bert, path)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.pop("mask_token", None)
    config_file.write_text(json.dumps(config), encoding="utf-8")
    with raises_lab_error(InputError) as err:
        run_trace(TraceRequest(trace_unknown=True, models=[str(path)], facts=[FACT], components=["resid"], corruption={"kind": "swap"}),
                  lab=lab, reporter=Reporter())
    assert err.value.field == "models" and "mask token" in err.value.message


def test_compare_merges_runs_and_names_each_model_once(lab, tiny_gpt2, tiny_bert):
    req = dict(facts=[FACT], components=["resid"], corruption={"kind": "swap"})
    a = run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], **req), lab=lab, reporter=Reporter())
    b = run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2), str(tiny_bert)], **req), lab=lab, reporter=Reporter())
    result = run_compare(CompareRequest(run_ids=[a.run_id, b.run_id]), lab=lab, reporter=Reporter())
    assert len(result.models) == 3 and len(set(result.models)) == 3
    cross = next(line for line in result.interpretation if line.startswith("Across models"))
    assert all(name in cross for name in result.models)
    assert result.figures and set(result.known) == set(result.models)
    redrawn = run_plot(PlotRequest(run_id=result.run_id), lab=lab)   # plot redraws compare's own figures
    assert redrawn.source_tool == "compare" and redrawn.kinds == ["layer_model_heatmap", "peak_bars", "layer_curve"]
    assert len(redrawn.figures) == len(result.figures)


def test_compare_input_errors_name_the_run(lab, tiny_gpt2):
    req = dict(models=[str(tiny_gpt2)], components=["resid"], corruption={"kind": "swap"})
    a = run_trace(TraceRequest(trace_unknown=True, facts=[FACT], **req), lab=lab, reporter=Reporter())
    other = run_trace(TraceRequest(trace_unknown=True, facts=[FACT.model_copy(update={"id": "f1"})], **req), lab=lab, reporter=Reporter())
    with raises_lab_error(InputError) as err:
        run_compare(CompareRequest(run_ids=[a.run_id, other.run_id]), lab=lab, reporter=Reporter())
    assert err.value.field == "run_ids[1]"
    with raises_lab_error(InputError) as err:
        run_compare(CompareRequest(run_ids=[a.run_id, a.run_id]), lab=lab, reporter=Reporter())
    assert err.value.field == "run_ids[1]"
    merged = run_compare(CompareRequest(run_ids=[a.run_id]), lab=lab, reporter=Reporter())
    with raises_lab_error(InputError) as err:
        run_compare(CompareRequest(run_ids=[merged.run_id]), lab=lab, reporter=Reporter())
    assert err.value.field == "run_ids[0]"


@pytest.mark.parametrize("window", [4, 6])
def test_fast_path_with_shared_window_states_equals_the_per_cell_loop(tmp_path, window):
    """Window rows of neighbouring layers share their states until the windows part (computed once);
    the numbers must still be the per-cell loop's, on a deeper model where the sharing happens."""
    from neurotrace.lab.tracing.grids.grid import Corrupted, exact_grid
    from neurotrace.lab.tracing.noise import subject_noise_std
    from neurotrace.testing.reference import reference_cells
    from neurotrace.testing.tiny import build_tiny

    lm = load(ModelRef(model=str(build_tiny("gpt2", tmp_path / "gpt2-6", n_layers=6))))
    prep = prepare_fact(lm, FACT, 0)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((3, prep.subject[1] - prep.subject[0], lm.d_model), generator=g)
    corr = Corrupted(prep.ids, noise * 3 * subject_noise_std(lm, [prep]), prep.subject)
    components = ["resid", "mlp", "attn"]
    fast = exact_grid(lm, prep, corr, components, window, Reporter(), rows_per_batch=37)
    cells = [(k, layer, p) for k in components for layer in range(lm.n_layers) for p in range(len(prep.ids))]
    ref = torch.tensor(reference_cells(lm, prep, corr, cells, window)).view(len(components), lm.n_layers, -1)
    assert max(float((fast[k] - ref[i]).abs().max()) for i, k in enumerate(components)) <= 1e-6
    assert float(fast["mlp"].std()) > 0


def test_fast_path_and_head_patching_agree_with_transformerlens_patching(tmp_path):
    """TransformerLens's own activation patching (on its TransformerBridge) against neurotrace's GPT-2 fast
    path for resid / mlp_out / attn_out per (layer, pos), and against head_grid per (layer, head)."""
    from transformer_lens import patching

    from neurotrace.lab.tracing.grids.fast_gpt2 import supports_fast_path
    from neurotrace.lab.tracing.grids.grid import Corrupted, exact_grid, head_grid
    from neurotrace.testing.tiny import build_tiny

    path = str(build_tiny("gpt2", tmp_path / "gpt2-3", n_layers=3))
    lm, bridged = load(ModelRef(model=path)), load(ModelRef(model=path, backend="bridge"))
    assert supports_fast_path(lm)
    prep = prepare_fact(lm, FACT, 0)
    corr = Corrupted(prep.swap_ids, None, prep.subject)
    ours = exact_grid(lm, prep, corr, ["resid", "mlp", "attn"], 1, Reporter())
    _, cache = bridged.bridge.run_with_cache(prep.ids[None])

    def metric(logits):
        return torch.softmax(logits[0, prep.predict_pos], -1)[prep.target_id]

    def tl(fn):
        return fn(bridged.bridge, prep.swap_ids[None], cache, metric)

    assert (tl(patching.get_act_patch_resid_pre)[1:] - ours["resid"][:-1]).abs().max() <= 1e-6
    assert (tl(patching.get_act_patch_mlp_out) - ours["mlp"]).abs().max() <= 1e-6
    assert (tl(patching.get_act_patch_attn_out) - ours["attn"]).abs().max() <= 1e-6
    heads = tl(patching.get_act_patch_attn_head_out_by_pos)[:, prep.predict_pos]       # (layer, head)
    assert (heads - head_grid(lm, prep, corr)).abs().max() <= 1e-6


def test_the_approx_cell_check_restores_exactly_like_the_per_cell_loop(tiny_gpt2):
    from neurotrace.lab.tracing.grids.approx_check import exact_cells, sample_cells
    from neurotrace.lab.tracing.grids.grid import Corrupted, approx_grid
    from neurotrace.testing.reference import reference_cells

    lm = load(ModelRef(model=str(tiny_gpt2)))
    prep = prepare_fact(lm, FACT, 0)
    g = torch.Generator().manual_seed(0)
    corr = Corrupted(prep.ids, torch.randn((3, prep.subject[1] - prep.subject[0], lm.d_model), generator=g) * 0.5,
                     prep.subject)
    approx = approx_grid(lm, prep, corr, ["mlp"], 2)["mlp"]
    cells = sample_cells(approx, seed=0)
    assert len(set(cells)) == len(cells) == min(16, approx.numel())
    ours = exact_cells(lm, prep, corr, "mlp", cells, 2)
    ref = reference_cells(lm, prep, corr, [("mlp", layer, pos) for layer, pos in cells], 2)
    assert max(abs(a - b) for a, b in zip(ours, ref, strict=True)) <= 1e-6


def test_approx_mode_alone_states_its_agreement_with_exact_patching(lab, tiny_gpt2):
    result = run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=[FACT], components=["mlp", "attn"], corruption=NOISE,
                                    mode="approx"), lab=lab, reporter=Reporter())
    f = _fact_results(lab, result, tiny_gpt2)
    assert set(f["approx_check"]) == {"mlp", "attn"} and len(f["approx_check"]["mlp"]["exact"]) == 10   # all cells
    checks = {a.component: a for a in result.models[0].readings.approx}
    assert set(checks) == {"mlp", "attn"} and checks["mlp"].cells == 10
    assert checks["mlp"].verdict in {"agrees", "underestimates", "overestimates", "unclear"}
    assert "sampled cells" in result.summary and "rank correlation" in result.summary


def _hints(text):
    """Every `tool` with {"request": ...} in a hint, decoded."""
    import json
    import re

    dec = json.JSONDecoder()
    return [(m.group(1), dec.raw_decode(text, m.end())[0]["request"]) for m in re.finditer(r"`(\w+)` with ", text)]


def test_next_hints_are_valid_requests_of_the_tools_they_name(lab, tiny_gpt2):
    from neurotrace.lab.plotting import PlotRequest

    models = {"plot": PlotRequest, "compare": CompareRequest, "trace": TraceRequest}
    result = run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], facts=[FACT], components=["resid"], corruption={"kind": "swap"}),
                       lab=lab, reporter=Reporter())
    compared = run_compare(CompareRequest(run_ids=[result.run_id]), lab=lab, reporter=Reporter())
    hints = _hints(result.next) + _hints(compared.next)
    assert {tool for tool, _ in hints} >= {"plot", "compare"}
    for tool, request in hints:
        models[tool].model_validate(request)


def test_head_results_are_in_the_summary_and_in_a_layer_by_head_figure(lab):
    from neurotrace.lab.facts.packs import load_facts
    from neurotrace.lab.model.weights.embedded import embedded_model_path

    path = embedded_model_path("fact-gpt2")
    if path is None:
        pytest.skip("embedded fact-gpt2 is absent")
    fact = next(f for f in load_facts(path) if not f.held_out and f.template == "The capital of {} is")
    result = run_trace(TraceRequest(trace_unknown=True, models=["fact-gpt2"], facts=[fact], components=["attn"], heads=True, window=1,
                                    corruption={"kind": "noise", "samples": 2}), lab=lab, reporter=Reporter())
    top = result.models[0].readings.top_heads
    assert len(top) == 3 and top[0].effect >= top[1].effect >= top[2].effect
    assert f"L{top[0].layer}.H{top[0].head}" in result.summary
    assert any(uri.endswith("heads_fact-gpt2.png") for uri in result.figures)


def test_compare_says_when_it_aligns_models_by_relative_depth(lab, tiny_gpt2, tmp_path):
    from neurotrace.testing.tiny import build_tiny

    deeper = build_tiny("gpt2", tmp_path / "gpt2-4", n_layers=4)
    req = dict(facts=[FACT], components=["resid"], corruption={"kind": "swap"})
    a = run_trace(TraceRequest(trace_unknown=True, models=[str(tiny_gpt2)], **req), lab=lab, reporter=Reporter())
    b = run_trace(TraceRequest(trace_unknown=True, models=[str(deeper)], **req), lab=lab, reporter=Reporter())
    result = run_compare(CompareRequest(run_ids=[a.run_id, b.run_id]), lab=lab, reporter=Reporter())
    assert result.relative_depth
    same = run_compare(CompareRequest(run_ids=[a.run_id]), lab=lab, reporter=Reporter())
    assert not same.relative_depth


def test_compare_of_one_model_under_two_corruptions_labels_each_run_by_its_setting_and_never_says_models(lab, tiny_gpt2):
    from neurotrace.lab.tracing.figures import peak_bars

    req = dict(models=[str(tiny_gpt2)], facts=[FACT], components=["resid"], trace_unknown=True)
    noise = run_trace(TraceRequest(corruption=NOISE, **req), lab=lab, reporter=Reporter())
    swap = run_trace(TraceRequest(corruption={"kind": "swap"}, **req), lab=lab, reporter=Reporter())
    result = run_compare(CompareRequest(run_ids=[noise.run_id, swap.run_id]), lab=lab, reporter=Reporter())
    assert result.models == [f"{tiny_gpt2} (noise)", f"{tiny_gpt2} (swap)"]
    assert result.summary.startswith("Compared 2 runs of the same model")
    assert result.interpretation[0].startswith("Same model, different settings")
    assert "models route" not in result.summary
    assert f'"model": "{tiny_gpt2}"' in result.next                       # the first run's own name, for plot
    merged = lab.store.read_json(result.run_id, "compare_results.json")
    assert merged["corruption"]["kind"] == "mixed" and [c["kind"] for c in merged["corruption"]["runs"]] == ["noise", "swap"]
    subtitle = " ".join(peak_bars(merged)._suptitle.get_text().split())
    assert "mixed settings" in subtitle and "(exact, noise)" not in subtitle
    again = run_trace(TraceRequest(corruption={"kind": "swap"}, **req), lab=lab, reporter=Reporter())
    same = run_compare(CompareRequest(run_ids=[swap.run_id, again.run_id]), lab=lab, reporter=Reporter())
    assert same.models == [str(tiny_gpt2), f"{tiny_gpt2} ({again.run_id[-8:]})"]   # nothing differs: the run tail
