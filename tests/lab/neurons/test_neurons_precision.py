"""find_neurons in bfloat16: its float32 recheck against float32 on every decoder family and fact-gpt2, a planted
one-cell difference found and the top neuron it fakes flagged, top_examples and collapse modes, the fallback."""

import pytest
import torch

from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.runtime.pooling import collect, tokenize_prompts
from neurotrace.lab.model.runtime.precision import ENV_FAST, lease_pair
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.neurons.precision import compare_ranking, leverage_prompts, recheck_ranking
from neurotrace.lab.neurons.run import run_find_neurons
from neurotrace.lab.neurons.schema import FindNeuronsRequest
from neurotrace.lab.neurons.stats import contrast, rank
from neurotrace.testing.tiny import DECODER_FAMILIES, build_tiny, word_prompts

pytestmark = pytest.mark.usefixtures("fast_bfloat16")  # the agreement is under test, not this CPU's speed


def _model(family, tmp_path):
    return family if family == "fact-gpt2" else str(build_tiny(family, tmp_path / family))


def _acts(lm, prompts, layer):
    site = site_name("mlp_post", layer)
    return collect(lm, tokenize_prompts(lm, prompts), [site], "last")[site]


@pytest.mark.parametrize("family", [*DECODER_FAMILIES, "fact-gpt2"])
def test_bfloat16_ranking_agrees_with_float32_within_its_reported_bound(lab, tmp_path, family):
    model = _model(family, tmp_path)
    concept, control = word_prompts(2, 5, seed=1), word_prompts(1, 5, seed=2)
    fields = {"model": model, "prompts": concept, "control_prompts": control, "layers": [1], "top_k": 5,
              "n_permutations": 50}
    r32 = run_find_neurons(FindNeuronsRequest(**fields), lab=lab)
    r16 = run_find_neurons(FindNeuronsRequest(**fields, precision="bfloat16"), lab=lab)
    a = r16.precision_agreement
    assert r32.precision_agreement is None and r16.precision == "bfloat16" and a.n == 3        # 3 prompts: every one
    with lease_pair(lab.cache, ModelRef(model=model), "bfloat16") as (b16, f32):
        true = (_acts(b16, concept + control, 1) - _acts(f32, concept + control, 1)).abs().max()
    assert float(true) == pytest.approx(a.max_abs_diff, rel=1e-3, abs=1e-6)   # the bound is every prompt's
    readings = lambda r: ([s.neuron for s in r.top[:3]], sum(s.p_bonferroni < 0.05 for s in r.top))  # noqa: E731
    assert bool(a.changed) == (readings(r16) != readings(r32))
    assert a.summary in r16.summary


def test_a_planted_one_cell_difference_is_found_and_a_changed_ranking_is_flagged(lab):
    request = FindNeuronsRequest(model="fact-gpt2", prompts=word_prompts(6, 5, seed=1),
                                 control_prompts=word_prompts(6, 5, seed=2), layers=[2], n_permutations=50,
                                 precision="bfloat16")
    with lease_pair(lab.cache, ModelRef(model="fact-gpt2"), "bfloat16") as (b16, f32):
        ids = tokenize_prompts(b16, request.prompts) + tokenize_prompts(b16, request.control_prompts)
        site = site_name("mlp_post", 2)
        x = collect(f32, ids, [site], "last")[site]                        # float32 values: differences are planted
        stats = contrast(x, 6, 50, 0)
        clean = recheck_ranking(f32, request, [2], ids, list(range(12)), x, 6, stats, None)
        assert clean.changed == [] and clean.max_abs_diff < 1e-5           # nothing planted: nothing found
        row = leverage_prompts(x, 6, stats)[0]                             # the top neuron's deciding prompt
        far = int(rank(stats)[300])                                        # a neuron far down the ranking
        planted = x.clone()
        planted[row, far] += 50.0                                          # one cell
        found = recheck_ranking(f32, request, [2], ids, list(range(12)), planted, 6, contrast(planted, 6, 50, 0),
                                None)
    assert found.chosen[0] == f"prompt {row}" and found.worst == f"prompt {row}"
    assert found.max_abs_diff == pytest.approx(50.0, abs=1e-3)
    # a float32 recheck that disagrees on the top neuron (its values flattened in every prompt) is flagged
    top = int(rank(stats)[0])
    flat = {r: torch.cat([x[r, :top], x[:, top].mean().reshape(1), x[r, top + 1:]]) for r in range(12)}
    _, _, _, changed = compare_ranking(x, 6, flat, stats, [2], x.shape[1], 50, 0, 5)
    assert any(c.startswith(f"top neurons: 2:{top}") for c in changed)


def test_top_examples_and_collapse_modes_recheck_their_own_quantity(lab):
    ex = run_find_neurons(FindNeuronsRequest(model="fact-gpt2", mode="top_examples", neuron="1:3",
                                             prompts=word_prompts(4, 5, seed=1), precision="bfloat16"), lab=lab)
    assert ex.precision_agreement.quantity == "neuron activation" and ex.precision_agreement.n == 4 and ex.precision_agreement.max_abs_diff < 0.05
    f32 = run_find_neurons(FindNeuronsRequest(model="fact-gpt2", mode="top_examples", neuron="1:3",
                                              prompts=word_prompts(4, 5, seed=1)), lab=lab)
    gaps = [abs(a.activation - b.activation) for a, b in zip(ex.examples, f32.examples, strict=True)
            if (a.prompt_index, a.pos) == (b.prompt_index, b.pos)]
    assert gaps and max(gaps) <= ex.precision_agreement.max_abs_diff + 1e-6
    col = run_find_neurons(FindNeuronsRequest(model="fact-gpt2", mode="collapse", prompts=word_prompts(6, 5, seed=1),
                                              max_new_tokens=12, n_permutations=50, precision="bfloat16"), lab=lab)
    assert col.precision_agreement.quantity == "pooled MLP activation" and col.precision_agreement.n >= 3


def test_float32_ranking_is_unchanged_and_a_slow_cpu_falls_back(lab, monkeypatch):
    monkeypatch.setenv(ENV_FAST, "0")
    fields = {"model": "fact-gpt2", "prompts": word_prompts(3, 5, seed=1), "control_prompts": word_prompts(3, 5, 2),
              "layers": [1], "n_permutations": 50}
    r32 = run_find_neurons(FindNeuronsRequest(**fields), lab=lab)
    fell = run_find_neurons(FindNeuronsRequest(**fields, precision="bfloat16"), lab=lab)
    assert fell.precision == "float32" and fell.precision_agreement is None and "not faster" in fell.summary
    assert [s.model_dump() for s in fell.top] == [s.model_dump() for s in r32.top]


def test_the_dry_run_counts_the_float32_recheck(lab):
    fields = {"model": "fact-gpt2", "prompts": word_prompts(20, 5, seed=1), "control_prompts": word_prompts(20, 5, 2)}
    f32, b16 = FindNeuronsRequest(**fields).cost(lab), FindNeuronsRequest(**fields, precision="bfloat16").cost(lab)
    assert f32.rows == 40 and b16.rows == 40 + 3 + 4 and "precision" in b16.fields   # top-3 prompts + 10%
