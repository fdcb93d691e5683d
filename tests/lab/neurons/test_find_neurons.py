"""find_neurons: the planted neurons are found, the statistics are right, activations equal TransformerLens's."""

import csv
import itertools
import json

import pytest
import torch

from neurotrace.lab.clamping import ClampSweepRequest, run_clamp_sweep
from neurotrace.lab.errors import Cancelled, InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.runtime.pooling import collect, tokenize_prompts
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.neurons import FindNeuronsRequest, run_find_neurons
from neurotrace.lab.neurons.figures import FIGURES, RESULTS_FILE
from neurotrace.lab.neurons.schema import NEURONS_RESULTS, NeuronExamplesResults, NeuronRankingResults
from neurotrace.lab.neurons.stats import benjamini_hochberg, cohens_d, contrast, permutation_p, rank
from neurotrace.lab.progress import Reporter
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.planted_neurons import build_planted_neurons
from neurotrace.testing.records import assert_redraws, read_back

CONCEPT = ["the big fish", "one red fish", "a fish", "the old fish", "its fish", "two blue fish", "fish",
           "the small green fish"]
CONTROL = ["the big dog", "one red car", "a tree", "the old house", "its water", "two blue cat", "bird",
           "the small green road"]
LOOPING = ["the moon", "a big moon", "one star", "the red moon"]
HEALTHY = ["the city", "a big king", "one paris", "the red day"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted_neurons(tmp_path_factory.mktemp("planted-neurons") / "m")


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def test_contrast_ranks_the_planted_fish_neuron_first_with_a_small_p(lab, planted):
    result = run_find_neurons(FindNeuronsRequest(model=str(planted.path), prompts=CONCEPT, control_prompts=CONTROL,
                                                 n_permutations=5000), lab=lab)
    top = result.top[0]
    assert top.neuron == planted.concept_neuron and top.cohens_d > 5
    assert top.p_value < 1e-3 and top.p_bonferroni < 0.05      # exact: 2 of the C(16, 8) = 12870 splits
    assert result.n_a == 8 and result.n_b == 8 and result.n_tested == 2 * 16
    assert abs(result.top[1].cohens_d) < top.cohens_d / 2
    assert "Bonferroni" in result.summary and "clamp_sweep" in result.next
    with open(lab.store.artifact_path(result.run_id, "tables/neurons.csv"), encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 32 and rows[0]["neuron"] == "0:5"
    assert lab.store.manifest(result.run_id).status == "complete"
    assert any(u.endswith("figures/ranking.png") for u in result.figures)
    arrays = lab.store.read_tensors(result.run_id, "arrays/contrast.safetensors")
    assert arrays["0.cohens_d"].shape == (16,) and int(arrays["0.cohens_d"].abs().argmax()) == 5


def test_collapse_mode_finds_the_loop_neuron_and_clamping_it_rescues_the_prompts(lab, planted):
    result = run_find_neurons(FindNeuronsRequest(model=str(planted.path), mode="collapse", prompts=LOOPING + HEALTHY,
                                                 max_new_tokens=12, window=2), lab=lab)
    assert result.n_a == 4 and result.n_b == 4
    assert result.top[0].neuron == planted.loop_neuron and result.top[0].mean_a > 3
    assert "clamp_sweep" in result.next and '"1:3"' in result.next
    sweep = run_clamp_sweep(ClampSweepRequest(model=str(planted.path), neurons=[result.top[0].neuron],
                                              prompts=LOOPING, values=[0], max_new_tokens=12), lab=lab)
    assert sweep.n_collapsed_baselines == 4 and sweep.n_recovered == 4


def test_the_clamp_sweep_hand_off_reproduces_find_neurons_baselines(lab):
    """Issue 25 item 10: find_neurons and clamp_sweep disagreed on which baselines collapsed (BOS handling
    differed: GPT-2's tokenizer adds no BOS, clamp_sweep puts one first). The hand-off request, run as given,
    generates every baseline exactly as find_neurons did."""
    prompts = ["The capital of France is", "Paris is the capital of", "The", "the the", "Rome", "In", "A port scan",
               "The capital of", "Berlin is in", "SQL injection is"]
    found = run_find_neurons(FindNeuronsRequest(model="fact-gpt2", mode="collapse", prompts=prompts, max_new_tokens=16,
                                                n_permutations=10), lab=lab)
    with open(lab.store.artifact_path(found.run_id, "tables/generations.csv"), encoding="utf-8") as fh:
        generated = {row["prompt"]: (row["collapsed"] == "True", row["output"]) for row in csv.DictReader(fh)}
    handoff = json.loads(found.next.split(" with ", 1)[1].split(" to test", 1)[0])["request"]
    assert {True, False} <= {generated[p][0] for p in handoff["prompts"]}     # collapsed and healthy prompts
    request = ClampSweepRequest.model_validate({**handoff, "values": [0], "controls": 0})  # baselines: unchanged
    sweep = run_clamp_sweep(request, lab=lab)
    with open(lab.store.artifact_path(sweep.run_id, "tables/clamp_sweep.csv"), encoding="utf-8") as fh:
        baselines = {row["prompt"]: (row["is_collapsed"] == "True", row["output"]) for row in csv.DictReader(fh)
                     if row["sweep"] == "baseline"}
    assert baselines == {p: generated[p] for p in handoff["prompts"]}
    assert sweep.n_collapsed_baselines == sum(generated[p][0] for p in handoff["prompts"])


def test_collapse_mode_without_healthy_prompts_is_an_input_error(lab, planted):
    with raises_lab_error(InputError) as err:
        run_find_neurons(FindNeuronsRequest(model=str(planted.path), mode="collapse", prompts=LOOPING,
                                            max_new_tokens=8), lab=lab)
    assert err.value.field == "prompts" and "every one" in err.value.message


def test_top_examples_lists_the_fish_positions_first(lab, planted):
    result = run_find_neurons(FindNeuronsRequest(model=str(planted.path), mode="top_examples", neuron="0:5",
                                                 prompts=["the fish is big", "a cat", "fish and fish"], top_k=3),
                              lab=lab)
    assert [e.token for e in result.examples] == ["fish"] * 3
    assert {(e.prompt_index, e.pos) for e in result.examples} == {(0, 1), (2, 0), (2, 2)}
    assert result.examples[0].context.endswith("fish") and "contrast" in result.next


def test_contrast_is_deterministic_for_a_seed(lab, planted):
    req = FindNeuronsRequest(model=str(planted.path), prompts=CONCEPT[:3], control_prompts=CONTROL[:3],
                             n_permutations=200, seed=3, position="mean")
    a, b = run_find_neurons(req, lab=lab), run_find_neurons(req, lab=lab)
    assert [s.model_dump() for s in a.top] == [s.model_dump() for s in b.top]


def test_permutation_p_and_cohens_d_match_direct_formulas():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    x[:5, 0] += 3.0
    d = cohens_d(x[:5], x[5:])
    sd = (((4 * x[:5].var(0)) + 4 * x[5:].var(0)) / 8).sqrt()
    assert torch.allclose(d, (x[:5].mean(0) - x[5:].mean(0)) / sd)
    p = permutation_p(x, 5, 4000, seed=0)
    assert p[0] < 0.02 < p[1] and p.min() >= 1 / 4001
    # an exact enumeration of the C(10, 5) = 252 splits agrees with the sampled p-value
    obs = (x[:5, 1].mean() - x[5:, 1].mean()).abs()
    splits = list(itertools.combinations(range(10), 5))
    hits = sum(1 for s in splits if (x[list(s), 1].mean() - x[[i for i in range(10) if i not in s], 1].mean()).abs()
               >= obs - 1e-12)
    assert float(p[1]) == pytest.approx(hits / len(splits), abs=0.03)


def test_benjamini_hochberg_matches_the_step_up_rule():
    p = torch.tensor([0.01, 0.04, 0.03, 0.2], dtype=torch.float64)
    q = benjamini_hochberg(p)
    assert torch.allclose(q, torch.tensor([0.04, 0.16 / 3, 0.16 / 3, 0.2], dtype=torch.float64))   # 0.03 * 4 / 2 > 0.04 * 4 / 3


def test_pooled_mlp_activations_equal_transformerlens_hook_post(tiny_gpt2):
    lm = load(ModelRef(model=str(tiny_gpt2), backend="bridge"))
    prompts = ["the cat is big", "a dog", "paris is the capital of france"]
    ids = tokenize_prompts(lm, prompts)
    sites = ["blocks.1.mlp.hook_post", "blocks.0.hook_resid_pre"]
    ours = collect(lm, ids, sites, "last")
    means = collect(lm, ids, sites, "mean")
    for i, seq in enumerate(ids):
        _, cache = lm.bridge.run_with_cache(torch.tensor([seq]))
        for site in sites:
            assert torch.allclose(ours[site][i], cache[site][0, -1].float(), atol=1e-5)
            assert torch.allclose(means[site][i], cache[site][0].float().mean(0), atol=1e-5)


@pytest.mark.parametrize(("fields", "field"), [
    ({"control_prompts": []}, "control_prompts"),
    ({"mode": "top_examples", "neuron": None}, "neuron"),
    ({"mode": "top_examples", "neuron": "0:99"}, "neuron"),
    ({"mode": "top_examples", "neuron": "*:1"}, "neuron"),
    ({"layers": [7]}, "layers"),
])
def test_bad_requests_raise_input_errors_naming_the_field(lab, planted, fields, field):
    base = {"model": str(planted.path), "prompts": CONCEPT[:2], "control_prompts": CONTROL[:2]}
    with raises_lab_error(InputError) as err:
        run_find_neurons(FindNeuronsRequest(**(base | fields)), lab=lab)
    assert err.value.field == field


def test_ranking_puts_a_neuron_that_moves_ahead_of_a_nearly_constant_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 6, generator=g, dtype=torch.float64)
    x[:, 0] = 1e-5 * torch.randn(20, generator=g, dtype=torch.float64)
    x[:10, 0] += 1e-3                                       # tiny but consistent: plain d ~ 100
    x[:10, 1] += 3.0                                        # a real shift: d ~ 3
    c = contrast(x, 10, 200, seed=0)
    assert c.cohens_d[0].abs() > 50 > c.cohens_d[1].abs() > 2
    assert rank(c)[0] == 1


def test_cancelling_marks_the_run_cancelled(lab, planted):
    reporter = Reporter()
    reporter.cancel()
    with pytest.raises(Cancelled):
        run_find_neurons(FindNeuronsRequest(model=str(planted.path), prompts=CONCEPT, control_prompts=CONTROL),
                         lab=lab, reporter=reporter)
    assert lab.store.list_runs("find_neurons")[0].status == "cancelled"


def test_the_saved_results_of_both_modes_round_trip_through_their_records_and_redraw_the_runs_figures(lab, planted):
    ranked = run_find_neurons(FindNeuronsRequest(model=str(planted.path), prompts=CONCEPT[:4],
                                                 control_prompts=CONTROL[:4], n_permutations=100), lab=lab)
    rec = read_back(lab, ranked.run_id, RESULTS_FILE, NEURONS_RESULTS.validate_python)
    assert isinstance(rec, NeuronRankingResults) and rec.groups == ("concept", "control")
    assert rec.top[: len(ranked.top)] == ranked.top and rec.n_tested == ranked.n_tested
    assert_redraws(lab, ranked.run_id, {"ranking": FIGURES["ranking"]}, rec)
    assert [t.get_text() for t in FIGURES["ranking"](rec, k=3).axes[0].get_yticklabels()] == [
        s.neuron for s in rec.top[:3]]
    found = run_find_neurons(FindNeuronsRequest(model=str(planted.path), mode="top_examples", neuron="0:5",
                                                prompts=["the fish is big", "fish and fish"]), lab=lab)
    rec = read_back(lab, found.run_id, RESULTS_FILE, NEURONS_RESULTS.validate_python)
    assert isinstance(rec, NeuronExamplesResults) and rec.neuron == "0:5" and rec.examples[:3] == found.examples[:3]
    assert_redraws(lab, found.run_id, {"examples": FIGURES["examples"]}, rec)
    assert "no ranking in a top_examples run" in [t.get_text() for t in FIGURES["ranking"](rec).axes[0].texts]
