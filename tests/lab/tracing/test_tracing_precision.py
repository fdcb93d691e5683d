"""trace in bfloat16: agreement with float32 measured on recomputed cells, planted differences found,
changed readings flagged, and float32 where bfloat16 is not faster."""

import pytest
import torch

from neurotrace import TraceRequest, run_trace
from neurotrace.lab.errors import InputError
from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.facts.packs import load_pack
from neurotrace.lab.model.runtime.precision import ENV_FAST, reduced_model
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.grids.grid import Corrupted, exact_grid
from neurotrace.lab.tracing.noise import subject_noise_std
from neurotrace.lab.tracing.prepare import prepare_fact
from neurotrace.testing.tiny import build_tiny

FACT = Fact(id="f", template="the capital city of {} is known for its", clean_subject="france",
            target="paris", corrupt_subject="japan")
FAMILIES = ["llama", "gpt_neox", "gemma3_text"]   # gpt2: fact-gpt2 below


pytestmark = pytest.mark.usefixtures("fast_bfloat16")  # the agreement is under test, not this CPU's speed


def _both(lab, **fields):
    out = {}
    for precision in ("float32", "bfloat16"):
        out[precision] = run_trace(TraceRequest(**fields, precision=precision), lab=lab)
    return out


def _record(lab, result, model):
    return lab.store.read_json(result.run_id, "trace_results.json")["models"][model]


def _indirect(record):
    return {k: torch.tensor(v) for k, v in record["facts"][0]["indirect"].items()}


def _cell(label, tokens):
    """(component, layer, [positions]) of a recomputed cell's label 'fact: mlp L1 'token' (peak)'."""
    k, layer, token = label.split(": ", 1)[1].replace(" (peak)", "").split(" ", 2)
    return k, int(layer[1:]), [p for p, t in enumerate(tokens) if repr(t) == token]


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_trace_agrees_with_float32_within_the_reported_bound(family, tmp_path, lab):
    path = str(build_tiny(family, tmp_path / family, n_layers=3, seed=2))
    runs = _both(lab, models=[path], facts=[FACT], corruption={"kind": "noise", "samples": 2}, trace_unknown=True)
    r32, r16 = _record(lab, runs["float32"], path), _record(lab, runs["bfloat16"], path)
    g32, g16 = _indirect(r32), _indirect(r16)
    agree = runs["bfloat16"].models[0].precision_agreement
    assert runs["float32"].models[0].precision_agreement is None and r16["precision"] == "bfloat16"
    diff = {k: (g32[k] - g16[k]).abs() for k in g32}
    whole = max(float(d.max()) for d in diff.values())
    assert 0 < whole < 0.01                               # bfloat16 differs, a little, on these models ...
    assert agree.max_abs_diff <= whole + 1e-6             # ... and the sample's largest difference is one of them
    assert agree.n == agree.n_peaks + agree.n_random and agree.n_peaks == 2 * 3 and agree.n_random == 6
    k, layer, positions = _cell(agree.worst, r16["facts"][0]["tokens"])
    assert min(abs(float(diff[k][layer, p]) - agree.max_abs_diff) for p in positions) < 1e-5
    assert "bfloat16 agreement with float32" in runs["bfloat16"].summary


def test_fact_gpt2_bfloat16_trace_names_no_change_and_matches_float32(lab):
    runs = _both(lab, models=["fact-gpt2"], pack="geography", max_facts=1,
                 corruption={"kind": "noise", "samples": 3})
    a, b = runs["float32"].models[0], runs["bfloat16"].models[0]
    agree = b.precision_agreement
    assert agree.max_abs_diff < 0.003 and agree.changed == [] and agree.rerun is None
    assert a.peak.layer == b.peak.layer and a.peak.component == b.peak.component


def test_bfloat16_on_a_slow_cpu_runs_float32_with_a_note(lab, monkeypatch):
    monkeypatch.setenv(ENV_FAST, "0")
    runs = _both(lab, models=["fact-gpt2"], pack="geography", max_facts=1, corruption={"kind": "noise", "samples": 2})
    slow = runs["bfloat16"]
    assert slow.models[0].precision_agreement is None
    assert "ran in float32" in slow.summary and "insist_precision" in slow.summary
    assert slow.models[0].peak == runs["float32"].models[0].peak
    insisted = run_trace(TraceRequest(models=["fact-gpt2"], pack="geography", max_facts=1, precision="bfloat16",
                                      insist_precision=True, corruption={"kind": "noise", "samples": 2}), lab=lab)
    assert insisted.models[0].precision_agreement is not None and "as insisted" in insisted.summary


def test_bfloat16_refuses_the_nnsight_backend(lab):
    with pytest.raises(InputError) as err:
        run_trace(TraceRequest(models=["fact-gpt2"], facts=[FACT], precision="bfloat16", backend="nnsight"), lab=lab)
    assert err.value.field == "precision"


def _plant(monkeypatch, component, layer, pos, delta):
    """Add ``delta`` to one cell of every bfloat16 exact grid (the float32 recomputation is left alone)."""
    from neurotrace.lab.tracing import run as trace_run

    real = trace_run.exact_grid

    def planted(lm, *args, **kwargs):
        grids = real(lm, *args, **kwargs)
        if lm.ref.dtype == "bfloat16":
            grids[component][layer, pos] += delta
        return grids

    monkeypatch.setattr(trace_run, "exact_grid", planted)


ONE = {"models": ["fact-gpt2"], "pack": "geography", "max_facts": 1, "corruption": {"kind": "noise", "samples": 2},
       "precision": "bfloat16"}


def test_a_planted_peak_is_recomputed_and_the_changed_reading_flagged(lab, monkeypatch):
    control = run_trace(TraceRequest(**ONE), lab=lab).models[0].precision_agreement
    assert control.max_abs_diff < 0.02 and control.changed == []
    _plant(monkeypatch, "mlp", 5, 1, 1.0)          # a quiet cell made the fact's peak
    result = run_trace(TraceRequest(**ONE), lab=lab)
    agree = result.models[0].precision_agreement
    assert agree.max_abs_diff == pytest.approx(1.0, abs=0.02) and "mlp L5" in agree.worst
    assert agree.worst.endswith("(peak)")
    assert any(c.startswith("peak of ") for c in agree.changed) and "precision='float32'" in agree.rerun
    assert "would change" in result.summary and "precision='float32'" in result.summary


def test_a_planted_difference_on_a_sampled_cell_is_found(lab, monkeypatch):
    control = run_trace(TraceRequest(**ONE), lab=lab)
    agree = control.models[0].precision_agreement
    tokens = _record(lab, control, "fact-gpt2")["facts"][0]["tokens"]
    label = next(c for c in agree.chosen if not c.endswith("(peak)"))
    k, layer, positions = _cell(label, tokens)
    _plant(monkeypatch, k, layer, positions[0], 0.05)
    found = run_trace(TraceRequest(**ONE), lab=lab).models[0].precision_agreement
    assert found.chosen == agree.chosen                      # the same seeded sample
    assert found.worst == label and found.max_abs_diff == pytest.approx(0.05, abs=0.01)
    assert found.max_abs_diff > 5 * agree.max_abs_diff


def test_exact_grid_computes_only_the_cells_asked_for(tiny_gpt2, tiny_llama, tiny_bert):
    for path in (tiny_gpt2, tiny_llama, tiny_bert):
        lm = load(ModelRef(model=str(path)))
        fact = Fact(id="f", template="the capital of {} is", clean_subject="france", target="paris",
                    corrupt_subject="spain") if lm.lm_kind == "causal" else FACT
        prep = prepare_fact(lm, fact, 0)
        g = torch.Generator().manual_seed(0)
        noise = torch.randn((2, prep.subject[1] - prep.subject[0], lm.d_model), generator=g)
        corr = Corrupted(prep.ids, noise * 3 * subject_noise_std(lm, [prep]), prep.subject)
        full = exact_grid(lm, prep, corr, ["resid", "mlp"], 2, Reporter())
        n = lm.n_layers * len(prep.ids)
        cells = [1, n - 1, n + 3]
        some = exact_grid(lm, prep, corr, ["resid", "mlp"], 2, Reporter(), cells=cells)
        flat_full = torch.cat([full["resid"].flatten(), full["mlp"].flatten()])
        flat_some = torch.cat([some["resid"].flatten(), some["mlp"].flatten()])
        assert torch.allclose(flat_some[cells], flat_full[cells], atol=1e-6)
        assert int(flat_some.isnan().sum()) == len(flat_full) - len(cells)


def test_an_anchored_bfloat16_grid_starts_every_row_from_float32_states():
    """With the float32 model as anchor (as trace runs bfloat16), the clean and corrupted runs are float32 and
    only each row's own layers run in bfloat16: the final-layer cell at the scored position (the clean run
    itself) is float32's, and the whole grid is closer to float32 than the copy alone gets it."""
    lm = load(ModelRef(model="fact-gpt2"))
    lb = reduced_model(lm)
    for i, fact in enumerate(load_pack("geography").facts[:2]):
        prep = prepare_fact(lm, fact, i)
        noise = torch.randn((3, prep.subject[1] - prep.subject[0], lm.d_model), generator=torch.Generator().manual_seed(i))
        corr = Corrupted(prep.ids, noise * 3 * subject_noise_std(lm, [prep]), prep.subject)
        g32, alone, anchored = (exact_grid(m, prep, corr, ["resid", "mlp", "attn"], 10, Reporter(), anchor=a)
                                for m, a in ((lm, None), (lb, None), (lb, lm)))
        worst = {name: max(float((g[k] - g32[k]).abs().max()) for k in g32) for name, g in
                 (("alone", alone), ("anchored", anchored))}
        last = (lm.n_layers - 1, prep.predict_pos)
        assert abs(float(anchored["resid"][last] - g32["resid"][last])) < 1e-4
        assert worst["anchored"] < 1.5e-3 and worst["anchored"] < worst["alone"]


def test_approx_mode_in_bfloat16_recomputes_the_whole_attribution_grid(lab):
    result = run_trace(TraceRequest(**{**ONE, "mode": "approx"}), lab=lab)
    record = _record(lab, result, "fact-gpt2")
    agree = result.models[0].precision_agreement
    cells = sum(len(g) * len(g[0]) for g in record["facts"][0]["indirect"].values())
    assert agree.n == cells and agree.n_peaks == 2 * 3 and agree.max_abs_diff < 0.05
