"""probe: a label carried to the last position by planted attention is readable from layer 1 on, not at
layer 0; shuffled labels stay near chance; states equal TransformerLens's accumulated residual."""

import itertools

import pytest
import torch

from neurotrace.lab.errors import Cancelled, InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.runtime.pooling import collect, tokenize_prompts
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.probe import ProbeRequest, ProbeResults, run_probe
from neurotrace.lab.probe.figures import FIGURES, RESULTS_FILE
from neurotrace.lab.probe.fit import cross_validate, fit, predict
from neurotrace.lab.probe.run import resid_site
from neurotrace.lab.progress import Reporter
from neurotrace.lab.seeding import make_generator
from neurotrace.testing.planted_neurons import PROBE_DIM, build_planted_neurons
from neurotrace.testing.records import assert_redraws, read_back

FILLERS = ["big", "red", "old", "dog", "car", "tree", "sun", "road"]
PAIRS = list(itertools.permutations(FILLERS[:5], 2))[:12]
PROMPTS = [f"{animal} {a} {b}" for animal in ("fish", "cat") for a, b in PAIRS]
LABELS = ["fish"] * len(PAIRS) + ["cat"] * len(PAIRS)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted_neurons(tmp_path_factory.mktemp("planted-probe") / "m")


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


@pytest.mark.parametrize("method", ["logistic", "ridge"])
def test_planted_label_is_readable_from_layer_1_and_not_at_layer_0(lab, planted, method):
    result = run_probe(ProbeRequest(model=str(planted.path), prompts=PROMPTS, labels=LABELS, positive="fish",
                                    method=method), lab=lab)
    acc = {r.layer: r for r in result.per_layer}
    assert set(acc) == {0, 1, 2} and result.classes == ["cat", "fish"] and result.chance == 0.5
    assert result.best_layer == planted.probe_layer and result.best_accuracy == 1.0
    assert acc[1].accuracy == acc[2].accuracy == 1.0 and acc[0].accuracy <= 0.6
    assert all(r.shuffled < 0.75 for r in result.per_layer)
    dirs = lab.store.read_tensors(result.run_id, "directions.safetensors")
    d = dirs["layer.1"]
    assert d.norm() == pytest.approx(1.0, abs=1e-5) and int(d.abs().argmax()) == PROBE_DIM and d[PROBE_DIM] > 0
    assert abs(float(dirs["shuffled.layer.1"][PROBE_DIM])) < float(d[PROBE_DIM])
    assert "probe_run_id" in result.next and any(u.endswith("figures/accuracy.png") for u in result.figures)
    assert result.p_value < 1e-5 and "not significant" not in result.summary


def test_a_best_layer_a_few_prompts_reach_by_chance_is_called_not_significant(lab, planted):
    """12 prompts: even a lucky layer at 7 or 8 of 12 is what the best of several layers reaches by chance
    (binomial tail vs chance, Bonferroni over the layers), so steering is not the next call."""
    from neurotrace.lab.probe.report import best_layer_p

    assert best_layer_p(0.633, 12, 0.5, 18) == 1.0
    assert best_layer_p(1.0, 24, 0.5, 3) == pytest.approx(3 * 0.5 ** 24)
    assert best_layer_p(8 / 12, 12, 0.5, 1) == pytest.approx(sum(__import__("math").comb(12, i) for i in range(8, 13))
                                                             / 4096)
    few = [p for i, p in enumerate(PROMPTS) if i % 4 == 0]
    result = run_probe(ProbeRequest(model=str(planted.path), prompts=few, labels=[LABELS[PROMPTS.index(p)] for p in few],
                                    positive="fish", layers=[0], k_folds=2), lab=lab)
    assert result.p_value > 0.05 and "not significant" in result.summary and "probe_run_id" not in result.next


def test_probe_runs_repeat_exactly_for_a_seed(lab, planted):
    req = ProbeRequest(model=str(planted.path), prompts=PROMPTS, labels=LABELS, layers=[0, 1], seed=4)
    a, b = run_probe(req, lab=lab), run_probe(req, lab=lab)
    assert [r.model_dump() for r in a.per_layer] == [r.model_dump() for r in b.per_layer]


def test_logistic_probe_separates_separable_points_and_cv_uses_every_row_once():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = torch.where(x[:, 2] > 0, 1.0, -1.0).double()
    w, b, mu, sd = fit(x, y, "logistic", 1e-3)
    assert (predict(x, w, b, mu, sd) == y).all()
    assert cross_validate(x, y, "logistic", 1e-3, 5, make_generator(0)).mean() > 0.9


def test_residual_states_equal_transformerlens_accumulated_resid(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2), backend="bridge"))
    ids = tokenize_prompts(lm, ["the cat is big", "paris is the capital of"])
    sites = [resid_site(layer, lm.n_layers) for layer in range(lm.n_layers + 1)]
    ours = collect(lm, ids, sites, "last")
    for i, seq in enumerate(ids):
        _, cache = lm.bridge.run_with_cache(torch.tensor([seq]))
        stack = cache.accumulated_resid(apply_ln=False)                    # (layers + 1, batch, pos, d_model)
        for layer, site in enumerate(sites):
            assert torch.allclose(ours[site][i], stack[layer, 0, -1].float(), atol=1e-5)


@pytest.mark.parametrize(("fields", "field"), [
    ({"labels": ["a", "b", "c", "a"]}, "labels"),
    ({"labels": ["a", "a", "a", "b"]}, "labels"),
    ({"prompts": PROMPTS[:5]}, "labels"),
    ({"positive": "z"}, "positive"),
    ({"layers": [9]}, "layers"),
])
def test_bad_requests_raise_input_errors_naming_the_field(lab, planted, fields, field):
    base = {"model": str(planted.path), "prompts": PROMPTS[:4], "labels": ["a", "b", "a", "b"]}
    with pytest.raises(InputError) as err:
        run_probe(ProbeRequest(**(base | fields)), lab=lab)
    assert err.value.field == field


def test_cancelling_marks_the_run_cancelled(lab, planted):
    reporter = Reporter()
    reporter.cancel()
    with pytest.raises(Cancelled):
        run_probe(ProbeRequest(model=str(planted.path), prompts=PROMPTS, labels=LABELS), lab=lab, reporter=reporter)
    assert lab.store.list_runs("probe")[0].status == "cancelled"


def test_the_saved_results_round_trip_through_their_record_and_redraw_the_runs_figures(lab, planted):
    result = run_probe(ProbeRequest(model=str(planted.path), prompts=PROMPTS, labels=LABELS, positive="fish",
                                    layers=[0, 1], k_folds=3), lab=lab)
    rec = read_back(lab, result.run_id, RESULTS_FILE, ProbeResults.model_validate)
    assert rec.per_layer == result.per_layer and list(rec.classes) == result.classes
    assert (rec.best_layer, rec.chance, rec.k_folds) == (result.best_layer, result.chance, 3)
    assert_redraws(lab, result.run_id, FIGURES, rec)
    probe_line = FIGURES["accuracy"](rec).axes[0].get_lines()[0]
    assert list(probe_line.get_ydata()) == [r.accuracy for r in rec.per_layer]
