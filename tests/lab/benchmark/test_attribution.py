"""Compiled circuits: the expected dissociation, analytic vs autograd gradients, AUROC itself."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neurotrace import BenchmarkRequest
from neurotrace.lab.benchmark import attribution
from neurotrace.lab.benchmark.attribution import (
    auroc,
    autograd_jacobian,
    integrated_gradients,
    patching,
    score_circuits,
)
from neurotrace.lab.benchmark.circuits import CAUSAL, REGIMES, SUPPRESSOR, build_circuit, sample_inputs
from neurotrace.lab.benchmark.figures import auroc_rows
from neurotrace.lab.benchmark.report import markdown_table
from neurotrace.lab.benchmark.run import dissociation
from neurotrace.lab.errors import InputError
from neurotrace.testing.errors import raises_lab_error


def _pairwise_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    pos, neg = scores[labels], scores[~labels]
    wins = (pos[:, None] > neg[None, :]).double().sum() + 0.5 * (pos[:, None] == neg[None, :]).double().sum()
    return float(wins / (len(pos) * len(neg)))


def test_auroc_counts_ties_half_and_orders_correctly():
    labels = torch.tensor([True, True, False, False])
    assert auroc(torch.tensor([3.0, 2.0, 1.0, 0.0]), labels) == 1.0
    assert auroc(torch.tensor([0.0, 1.0, 2.0, 3.0]), labels) == 0.0
    assert auroc(torch.tensor([1.0, 1.0, 1.0, 1.0]), labels) == 0.5
    assert auroc(torch.tensor([2.0, 1.0, 1.0, 0.0]), labels) == 0.875


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=30))
def test_rank_auroc_equals_the_pairwise_definition(pairs):
    scores = torch.tensor([float(s) for s, _ in pairs])
    labels = torch.tensor([lab for _, lab in pairs])
    if labels.all() or not labels.any():
        assert auroc(scores, labels) != auroc(scores, labels)          # nan: undefined without both classes
        return
    assert auroc(scores, labels) == pytest.approx(_pairwise_auroc(scores, labels), abs=1e-12)


def test_analytic_jacobian_equals_autograd_on_every_circuit():
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(8, generator=g)
    for regime in REGIMES:
        circuit = build_circuit(regime, perm)
        x = sample_inputs(regime, 512, g, perm)
        assert x.dtype == torch.float64
        assert (circuit.jacobian(x) - autograd_jacobian(circuit, x)).abs().max() <= 1e-6


def test_the_expected_dissociation_holds_over_sixteen_seeds():
    rows = auroc_rows(score_circuits(seeds=16, samples=512))
    props = dissociation(rows)
    assert all(props.values()), props
    a = {(r.method, r.circuit): r.auroc_mean for r in rows}
    assert a[("correlation", "confounded")] < 0.9 and a[("gradient", "suppressor")] < 0.9
    for method in ("integrated_gradients", "patching"):
        assert all(a[(method, c)] == 1.0 for c in REGIMES)
    for method in attribution.METHODS:
        assert abs(a[(method, "null")] - 0.5) < 0.1                    # scrambled labels: chance
    assert "| correlation |" in markdown_table(rows)


@pytest.mark.parametrize("steps,baseline", [(16, "zeros"), (32, "mean"), (256, "zeros")])
def test_integrated_gradients_recovers_the_suppressor_circuit_for_reasonable_steps(steps, baseline):
    scores = score_circuits(seeds=4, samples=512, ig_steps=steps, ig_baseline=baseline, regimes=("suppressor",))
    assert scores["integrated_gradients"]["suppressor"] == [1.0] * 4


def test_integrated_gradients_with_too_few_steps_aliases_on_the_suppressor():
    scores = score_circuits(seeds=4, samples=512, ig_steps=4, regimes=("suppressor",))
    assert min(scores["integrated_gradients"]["suppressor"]) < 1.0


def test_integrated_gradients_and_patching_match_their_closed_forms_on_additive_circuits():
    # every hidden unit reads one feature, so y = sum_i f_i(x_i): IG_i = f_i(x_i) - f_i(0) exactly
    circuit = build_circuit("suppressor")
    x = sample_inputs("suppressor", 512, torch.Generator().manual_seed(3))

    def contribution(i, xi):
        rows = circuit.W[:, i] != 0
        return (torch.tanh(circuit.W[rows, i] * xi[:, None] + circuit.b[rows]) * circuit.v[rows]).sum(-1)

    ig = integrated_gradients(circuit, x, torch.Generator(), steps=512)
    exact = torch.stack([(contribution(i, x[:, i]) - contribution(i, torch.zeros(1, dtype=x.dtype))).abs().mean()
                         if (circuit.W[:, i] != 0).any() else torch.tensor(0.0, dtype=x.dtype) for i in range(8)])
    assert torch.allclose(ig, exact, atol=2e-3)
    g = torch.Generator().manual_seed(5)
    donor = x[torch.randperm(512, generator=torch.Generator().manual_seed(5))]
    loop = []
    for i in range(8):
        xp = x.clone()
        xp[:, i] = donor[:, i]
        loop.append((circuit(xp) - circuit(x)).abs().mean())
    assert torch.allclose(patching(circuit, x, g), torch.stack(loop), atol=1e-12)


def test_integrated_gradients_chunking_does_not_change_the_result(monkeypatch):
    circuit = build_circuit("clean")
    x = sample_inputs("clean", 64, torch.Generator().manual_seed(4))
    whole = integrated_gradients(circuit, x, torch.Generator(), steps=32)
    monkeypatch.setattr(attribution, "_CHUNK", 64 * 8 * 3)                 # 3 steps per autograd batch
    assert torch.allclose(integrated_gradients(circuit, x, torch.Generator(), steps=32), whole, atol=1e-12)


def test_non_causal_features_have_exactly_zero_gradient_except_the_suppressor():
    circuit = build_circuit("suppressor")
    x = sample_inputs("suppressor", 512, torch.Generator().manual_seed(1))
    grads = autograd_jacobian(circuit, x).abs().mean(0)
    quiet = [i for i in range(8) if i not in CAUSAL and i != SUPPRESSOR]
    assert (grads[quiet] == 0).all()
    assert grads[SUPPRESSOR] > grads[list(CAUSAL)].max()              # the suppressor's steep local slope
    effects = patching(circuit, x, torch.Generator().manual_seed(2))
    assert effects[SUPPRESSOR] < 0.5 * effects[list(CAUSAL)].min()     # ...but little net effect


def test_same_seed_gives_identical_scores_and_another_seed_differs():
    a = score_circuits(seeds=2, samples=64, ig_steps=8, seed=3)
    assert a == score_circuits(seeds=2, samples=64, ig_steps=8, seed=3)
    assert a["random"] != score_circuits(seeds=2, samples=64, ig_steps=8, seed=4)["random"]


def test_repeated_parts_are_an_input_error_naming_parts():
    with raises_lab_error(InputError) as err:
        BenchmarkRequest(parts=["circuits", "circuits"])
    assert err.value.field == "parts"


def test_cli_prints_the_results_table(tmp_path, capsys):
    from neurotrace.cli import main

    assert main(["--runs-dir", str(tmp_path), "benchmark", "--parts", "circuits", "--seeds", "2",
                 "--samples", "64", "--ig-steps", "16"]) == 0
    out = capsys.readouterr().out
    assert "| method | clean | confounded | suppressor | null |" in out
    assert "| integrated_gradients |" in out
