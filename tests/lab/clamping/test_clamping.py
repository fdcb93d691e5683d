"""clamp_sweep end to end: the planted repetition neuron, the run directory, and every input error."""

import csv
import json

import pytest
from safetensors import safe_open

from neurotrace import ClampSweepRequest, run_clamp_sweep
from neurotrace.lab.clamping.figures import FIGURES
from neurotrace.lab.clamping.schema import ValueSummary
from neurotrace.lab.clamping.sweep import PAPER_SWEEP, parse_neuron, sweep_values
from neurotrace.lab.clamping.verdict import group_verdicts
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import Reporter
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.planted_clamp import build_repetition_model

PROMPTS = ["the cat", "paris is the capital of", "a"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_repetition_model(tmp_path_factory.mktemp("planted") / "m", layer=1, index=3)


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs", input_dirs=(tmp_path,)))  # files here may be read


def _sweep(lab, model, **kw):
    fields = {"model": str(model), "neurons": ["1:3"], "prompts": PROMPTS, "max_new_tokens": 16,
              "values": [-5, 0, None, 10], "controls": 0} | kw
    return run_clamp_sweep(ClampSweepRequest(**fields), lab=lab, reporter=Reporter())


def _rows(lab, result):
    path = lab.store.artifact_path(result.run_id, "tables/clamp_sweep.csv")
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("position", ["all", "last"])
def test_planted_neuron_collapses_baseline_and_clamping_it_to_zero_recovers(lab, planted, position):
    result = _sweep(lab, planted, position=position)
    assert result.n_prompts == 3 and result.n_rows == 3 * 4
    assert result.n_collapsed_baselines == 3 and result.n_recovered == 3
    by_value = {s.value: s for s in result.per_value}
    assert by_value[None].collapse_rate == 1.0
    assert by_value[0.0].n_improved == 3 and by_value[0.0].improvement_rate == 1.0
    assert by_value[10.0].n_improved == 0 and by_value[10.0].collapse_rate == 1.0
    assert result.best[0].value == 0.0                 # ties at 3 recoveries: smallest |value| first
    rows = _rows(lab, result)
    base = [r for r in rows if r["sweep"] == "baseline"]
    assert all(r["is_collapsed"] == "True" and r["intervention_improves_baseline"] == "" for r in base)
    assert len({r["output"].split()[0] for r in base}) == 1          # the planted loop token
    zero = [r for r in rows if r["sweep"] == "0"]
    assert all(r["intervention_improves_baseline"] == "True" and float(r["distinct_2"]) == 1.0 for r in zero)


def test_run_directory_holds_table_texts_means_report_and_figures(lab, planted, tmp_path):
    grid = tmp_path / "grid.jsonl"
    grid.write_text('{"prompt": "the dog", "core_id": "c7", "type": "cont", "level": "2"}\n', encoding="utf-8")
    result = _sweep(lab, planted, prompt_file=str(grid), neurons=["1:3", "*:5"], neuron_mode="separate")
    names = {uri.split("/artifacts/")[1] for uri in result.artifacts}
    assert {"tables/clamp_sweep.csv", "tables/generations.jsonl", "tables/sweep_summary.csv", "report.md",
            "clamp_results.json", "arrays/mean_mlp_post.safetensors", "figures/improvement_rate.png",
            "figures/sweep_metrics.png"} <= names
    assert result.n_rows == 4 * (1 + 2 * 3)            # baseline once + 2 groups x 3 values, per prompt
    rows = _rows(lab, result)
    assert list(rows[0])[:7] == ["core_id", "type", "level", "neurons", "sweep", "prompt", "output"]
    assert {"c7"} == {r["core_id"] for r in rows if r["prompt"] == "the dog"}
    assert {r["neurons"] for r in rows} == {"none", "1:3", "*:5"}
    path = lab.store.artifact_path(result.run_id, "arrays/mean_mlp_post.safetensors")
    with safe_open(str(path), "pt") as f:
        conds = json.loads(f.metadata()["conditions"])
        layer1 = f.get_tensor("blocks.1.mlp.hook_post")
        assert set(f.keys()) == {"blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post", "n_positions"}
    assert layer1.shape == (len(conds), 16)
    for i, (label, value) in enumerate(conds):     # position 'all': the clamped neuron's mean is the value
        if label == "1:3":
            assert float(layer1[i, 3]) == pytest.approx(value)
        if label == "*:5":
            assert float(layer1[i, 5]) == pytest.approx(value)
    assert float(layer1[0, 3]) > 4                     # baseline: the planted neuron fires (~drive 5)
    report = lab.store.artifact_path(result.run_id, "report.md").read_text(encoding="utf-8")
    assert "distinct_2 < 0.5" in report and "loop_frac >= 0.5" in report and "recovered by" in report
    results = lab.store.read_json(result.run_id, "clamp_results.json")
    for kind, fn in FIGURES.items():
        assert fn(results).axes, kind


def test_sampled_sweeps_repeat_for_a_seed(lab, tiny_gpt2):
    kw = {"neurons": ["0:1"], "values": [None, 2.0], "max_new_tokens": 6,
          "sampling": {"kind": "sample", "temperature": 1.2, "top_k": 20}}
    outs = []
    for seed in (3, 3, 4):
        result = _sweep(lab, tiny_gpt2, seed=seed, **kw)
        outs.append([r["output"] for r in _rows(lab, result)])
    assert outs[0] == outs[1] and outs[0] != outs[2]


def test_neuron_refs_parse_and_out_of_range_refs_name_neurons():
    assert parse_neuron("11:373", 12, 3072) == {11: (373,)}
    assert parse_neuron(" * : 2", 3, 8) == {0: (2,), 1: (2,), 2: (2,)}
    for ref, words in [("12:1", "12 layers"), ("0:3072", "3072 wide"), ("11-373", "layer:index"), ("x:1", "")]:
        with raises_lab_error(InputError) as err:
            parse_neuron(ref, 12, 3072)
        assert err.value.field == "neurons" and words in err.value.message


def test_sweep_defaults_to_the_paper_and_rejects_empty_or_nonfinite_sweeps():
    assert sweep_values(None) == sorted(v for v in PAPER_SWEEP if v is not None)
    assert sweep_values([5, None, 5, -1]) == [-1.0, 5.0]
    for bad in ([], [None], [float("nan"), 1.0]):
        with raises_lab_error(InputError) as err:
            sweep_values(bad)
        assert err.value.field == "values"


@pytest.mark.parametrize("fields,field", [
    ({"neurons": ["2:0"]}, "neurons"),
    ({"neurons": ["0:128"]}, "neurons"),
    ({"values": [None]}, "values"),
    ({"prompts": []}, "prompts"),
    ({"prompt_file": "/nonexistent/grid.jsonl"}, "prompt_file"),
    ({"max_new_tokens": 70}, "max_new_tokens"),
])
def test_bad_requests_raise_input_errors_naming_the_field(lab, tiny_gpt2, fields, field):
    with raises_lab_error(InputError) as err:
        _sweep(lab, tiny_gpt2, **fields)
    assert err.value.field == field
    assert not lab.store.list_runs("clamp_sweep")       # validation happens before a run is opened


def test_masked_models_are_refused(lab, tiny_bert):
    with raises_lab_error(InputError) as err:
        _sweep(lab, tiny_bert)
    assert err.value.field == "model"


def test_shipped_fact_gpt2_baselines_equal_plain_generate(lab):
    from neurotrace.lab.clamping.generation import reference_generate
    from neurotrace.lab.model.weights.embedded import embedded_model_path

    if embedded_model_path("fact-gpt2") is None:
        pytest.skip("the embedded fact-gpt2 model is not built in this checkout")
    prompts = ["The capital of Drosberesh is", "The capital city of Drosberesh is called", "The"]
    result = _sweep(lab, "fact-gpt2", neurons=["5:10", "*:3"], prompts=prompts, values=[-20, 0, 20],
                    max_new_tokens=20, position="last")
    rows = [json.loads(line) for line in lab.store.artifact_path(result.run_id, "tables/generations.jsonl")
            .read_text(encoding="utf-8").splitlines()]
    lm = lab.cache.get(ModelRef(model="fact-gpt2"))
    eos = lm.tokenizer.eos_token_id
    for row in rows:
        value = None if row["sweep"] == "baseline" else float(row["sweep"])
        neurons = None if value is None else {layer: [3] + ([10] if layer == 5 else []) for layer in range(6)}
        assert row["prompt_ids"][0] == lm.tokenizer.bos_token_id          # GPT-2 family: BOS, as TransformerLens
        ref = reference_generate(lm.model, lm.adapter, row["prompt_ids"], max_new_tokens=20,
                                 neurons=neurons, value=value, position="last", eos_token_id=eos,
                                 pad_token_id=lm.tokenizer.pad_token_id)
        assert row["tokens"] == ref, (row["prompt"], row["sweep"])


def test_the_planted_neuron_beats_its_random_same_layer_controls_and_another_neuron_does_not(lab, planted):
    planted_run = _sweep(lab, planted, controls=3)
    assert planted_run.n_rows == 3 * (1 + 3 + 3 * 3)          # baseline + group x 3 values + 3 controls x 3
    assert planted_run.verdict == "specific" and planted_run.groups[0].control_recovered == [0, 0, 0]
    assert planted_run.groups[0].recovery_above_control == 1.0 and planted_run.groups[0].best_value == 0.0
    assert all(s.control_of is None for s in planted_run.per_value)
    assert "Verdict 1:3: specific" in planted_run.summary and "3 loop" in planted_run.summary
    other = _sweep(lab, planted, neurons=["1:4"], controls=3)
    assert other.verdict == "not above control" and other.n_recovered == 0
    report = lab.store.artifact_path(other.run_id, "report.md").read_text(encoding="utf-8")
    assert "Rules: specific" in report and "not above control" in report
    summary = lab.store.artifact_path(other.run_id, "tables/sweep_summary.csv").read_text(encoding="utf-8")
    assert summary.count("control1[") == 3                        # controls' rows are kept in the artifacts


def _vs(neurons, value, improved, induced=0, control_of=None):
    return ValueSummary(neurons=neurons, value=value, n=4, n_collapsed=0, collapse_rate=0, n_improved=improved,
                        improvement_rate=None, n_induced=induced, mean_distinct_2=1, mean_loop_frac=0,
                        mean_norm_entropy=1, mean_compression_ratio=1, control_of=control_of)


def test_verdicts_follow_the_stated_thresholds():
    def verdict(group, controls, n_base=4):
        rows = [_vs("none", None, 0)] + [_vs("5:1", v, *x) for v, x in group.items()]
        rows += [_vs(f"c{k}", 1.0, c, control_of="5:1") for k, c in enumerate(controls)]
        return group_verdicts(rows, n_base, len(controls))[0].verdict

    assert verdict({1.0: (3,), 2.0: (1,)}, [1, 0, 1]) == "specific"           # 3 vs best 1, +50% above mean
    assert verdict({1.0: (4,)}, [5, 4, 4]) == "not above control"             # the 18:247 case
    assert verdict({1.0: (2,)}, [1, 2, 1]) == "not above control"             # ties the best control
    assert verdict({1.0: (2,)}, [1, 1, 1]) == "specific"                      # 1 more, +25% of 4 >= 20%
    assert verdict({1.0: (1, 3)}, [0, 0, 0]) == "harmful"                     # recovers 1, breaks 3
    assert verdict({1.0: (0,)}, [0, 0], n_base=0) == "no collapsed baselines"
    assert group_verdicts([_vs("5:1", 1.0, 2)], 4, 0)[0].verdict is None      # controls=0: no verdict


def test_a_specific_verdict_on_few_baselines_or_controls_says_it_is_a_lead():
    rows = [_vs("5:1", 1.0, 1), _vs("c0", 1.0, 0, control_of="5:1")]
    (few,) = group_verdicts(rows, 1, 1)                                     # 1 recovered of 1, one control
    assert few.verdict == "specific" and "a lead, not a finding" in few.reason
    rows = [_vs("5:1", 1.0, 5)] + [_vs(f"c{k}", 1.0, 1, control_of="5:1") for k in range(3)]
    (powered,) = group_verdicts(rows, 6, 3)
    assert powered.verdict == "specific" and "lead" not in powered.reason


def test_empty_outputs_are_counted_apart_from_loops(lab, planted):
    from neurotrace.lab.effects.collapse import collapse_type

    assert collapse_type(["empty (n_tokens 0 < 1)"]) == "empty"
    assert collapse_type(["distinct_2 0.30 < 0.5", "loop_frac 0.90 >= 0.5 (period 1, 16.0 copies)"]) == "loop"
    assert collapse_type(["norm_entropy 0.40 < 0.5"]) == "repetitive" and collapse_type([]) is None
    result = _sweep(lab, planted, thresholds={"min_tokens": 20})            # 16 tokens < 20: all "empty"
    assert result.baseline_collapse_types == {"empty": 3, "loop": 0, "repetitive": 0}
    assert {s.value: s.n_empty for s in result.per_value}[None] == 3
    assert "3 empty" in result.summary and "chat_template=true" in result.summary


def test_prepend_bos_follows_transformer_lens_by_default_and_can_be_switched_off(lab, planted):
    rows = {}
    for bos in (None, False, True):
        result = _sweep(lab, planted, prepend_bos=bos, values=[0])
        gens = lab.store.artifact_path(result.run_id, "tables/generations.jsonl").read_text(encoding="utf-8")
        rows[bos] = [json.loads(line)["prompt_ids"] for line in gens.splitlines()]
        assert any("BOS" in n for n in result.notes)
    assert all(ids[0] == 0 for ids in rows[None]) and rows[None] == rows[True]   # GPT-2 family: BOS id 0
    assert [ids[1:] for ids in rows[None]] == rows[False]


def test_chat_template_without_a_template_is_an_error_naming_the_field(lab, planted):
    with raises_lab_error(InputError) as err:
        _sweep(lab, planted, chat_template=True)
    assert err.value.field == "chat_template"


def test_chat_template_wraps_each_prompt_as_a_user_turn(lab, tiny_gpt2, tmp_path):
    import shutil

    model = tmp_path / "chat"
    shutil.copytree(tiny_gpt2, model)
    cfg_path = model / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["chat_template"] = "{% for m in messages %}user: {{ m['content'] }} {% endfor %}assistant:"
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    result = _sweep(lab, model, neurons=["0:1"], values=[1.0], max_new_tokens=3, prompts=["the cat"],
                    chat_template=True)
    gens = lab.store.artifact_path(result.run_id, "tables/generations.jsonl").read_text(encoding="utf-8")
    with lab.cache.lease(ModelRef(model=str(model))) as lm:
        want = lm.tokenizer("user: the cat assistant:", add_special_tokens=False).input_ids
    assert json.loads(gens.splitlines()[0])["prompt_ids"] == want
    assert any("chat template" in n for n in result.notes)


def test_a_clamp_on_the_last_block_notes_that_all_and_last_are_identical(lab, planted):
    outs = {}
    for position in ("all", "last"):
        result = _sweep(lab, planted, position=position)
        assert any("identical" in n for n in result.notes)
        outs[position] = [r["output"] for r in _rows(lab, result)]
    assert outs["all"] == outs["last"]
    assert not any("identical" in n for n in _sweep(lab, planted, neurons=["0:3"]).notes)
