"""Compiled circuits: the expected dissociation, analytic vs autograd gradients, AUROC itself."""

import torch

from neurotrace.lab.attribution import auroc, autograd_jacobian, score_circuits
from neurotrace.lab.benchmark import _rows, dissociation, markdown_table
from neurotrace.lab.circuits import REGIMES, build_circuit, sample_inputs


def test_auroc_counts_ties_half_and_orders_correctly():
    labels = torch.tensor([True, True, False, False])
    assert auroc(torch.tensor([3.0, 2.0, 1.0, 0.0]), labels) == 1.0
    assert auroc(torch.tensor([0.0, 1.0, 2.0, 3.0]), labels) == 0.0
    assert auroc(torch.tensor([1.0, 1.0, 1.0, 1.0]), labels) == 0.5
    assert auroc(torch.tensor([2.0, 1.0, 1.0, 0.0]), labels) == 0.875


def test_analytic_jacobian_equals_autograd_on_every_circuit():
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(8, generator=g)
    for regime in REGIMES:
        circuit = build_circuit(regime, perm)
        x = sample_inputs(regime, 256, g, perm)
        assert (circuit.jacobian(x) - autograd_jacobian(circuit, x)).abs().max() <= 1e-6


def test_the_expected_dissociation_holds_over_sixteen_seeds():
    rows = _rows(score_circuits(seeds=16, samples=512))
    props = dissociation(rows)
    assert all(props.values()), props
    a = {(r.method, r.circuit): r.auroc_mean for r in rows}
    for method in ("integrated_gradients", "patching"):
        assert all(a[(method, c)] == 1.0 for c in REGIMES)
    assert "| correlation |" in markdown_table(rows)


def test_non_causal_features_have_exactly_zero_gradient_except_the_suppressor():
    circuit = build_circuit("suppressor")
    x = sample_inputs("suppressor", 512, torch.Generator().manual_seed(1))
    grads = autograd_jacobian(circuit, x).abs().mean(0)
    assert (grads[[4, 5, 6, 7]] == 0).all()
    assert grads[3] > grads[[0, 1, 2]].max()          # the suppressor's steep local slope
    donor = x[torch.randperm(512, generator=torch.Generator().manual_seed(2))]

    def effect(i):
        patched = x.clone()
        patched[:, i] = donor[:, i]
        return (circuit(patched) - circuit(x)).abs().mean()

    assert effect(3) < 0.5 * min(effect(i) for i in (0, 1, 2))   # ...but little net effect
