"""clamp_sweep runs the shared damage check at each group's best value: a clamp that breaks neutral text reads
`destructive`, a gentle one does not."""

from neurotrace.lab.clamping.report import with_damage
from neurotrace.lab.clamping.run import damage_check
from neurotrace.lab.clamping.schema import GroupVerdict
from neurotrace.lab.clamping.sweep import Condition
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.loading import ModelRef

PROMPTS = ["The capital of Drosberesh is", "The capital city of Drosberesh is called"]


def test_a_huge_clamp_on_fact_gpt2_is_destructive_and_zeroing_one_neuron_is_not(tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    with lab.cache.lease(ModelRef(model="fact-gpt2")) as lm:
        ids = [list(lm.tokenizer(p).input_ids) for p in PROMPTS]
        conds = [Condition("2:0-63", 500.0, {2: tuple(range(64))}), Condition("1:7", 0.0, {1: (7,)})]
        check = damage_check(lm, ids, conds)
        huge, gentle = check("2:0-63", 500.0), check("1:7", 0.0)
    assert huge.destructive and huge.kl > 1.0 and huge.reasons
    assert not gentle.destructive and gentle.kl < 0.1 and gentle.n_positions >= 5
    groups = [GroupVerdict(neurons="2:0-63", best_value=500.0, n_recovered=2, n_induced=0, verdict="specific"),
              GroupVerdict(neurons="1:7", best_value=0.0, n_recovered=1, n_induced=0, verdict="specific")]
    with lab.cache.lease(ModelRef(model="fact-gpt2")) as lm:
        out = with_damage(groups, damage_check(lm, ids, conds))
    assert [g.verdict for g in out] == ["destructive", "specific"]
    assert out[0].reason.startswith("at its best value 500 it breaks neutral text")
