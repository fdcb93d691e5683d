"""The planted-circuit transformer: the route is real, and trace / head patching find it."""

import pytest
import torch

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.models import ModelRef, load
from neurotrace.lab.planted import build_planted
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing import TraceRequest, run_trace
from neurotrace.lab.tracing_core import prepare_fact, subject_noise_std, target_probs
from neurotrace.lab.tracing_grid import Corrupted, corrupted_probs, head_grid


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted(tmp_path_factory.mktemp("planted") / "planted-gpt2")


def test_planted_model_recalls_its_facts_and_noise_breaks_recall(planted):
    lm = load(ModelRef(model=str(planted.path)))
    for i, fact in enumerate(planted.facts):
        prep = prepare_fact(lm, fact, i)
        assert prep.subject == (planted.subject_last_pos, planted.subject_last_pos + 1)
        assert target_probs(lm, prep.ids[None], prep.predict_pos, prep.target_id)[0] > 0.99
        noise = torch.randn((10, 1, lm.d_model), generator=torch.Generator().manual_seed(i)) * 3 * subject_noise_std(lm, [prep])
        assert corrupted_probs(lm, prep, Corrupted(prep.ids, noise, prep.subject)).mean() < 0.8


@pytest.mark.parametrize("mode", ["exact", "approx"])
def test_trace_peaks_at_the_planted_mlp_layer_and_last_subject_token(planted, tmp_path, mode):
    lab = Lab(LabSettings(runs_dir=tmp_path))
    req = TraceRequest(models=[str(planted.path)], facts=list(planted.facts), kinds=["mlp"], window=1, mode=mode,
                       corruption={"kind": "noise", "samples": 5})
    result = run_trace(req, lab=lab, reporter=Reporter())
    facts = lab.store.read_json(result.run_id, "trace_results.json")["models"][str(planted.path)]["facts"]
    for f in facts:
        grid = torch.tensor(f["indirect"]["mlp"])
        assert divmod(int(grid.argmax()), grid.shape[1]) == (planted.mlp_layer, planted.subject_last_pos)
    peak = result.models[0].peak
    assert (peak.kind, peak.layer, peak.position) == ("mlp", planted.mlp_layer, "last subject token")


def test_head_patching_singles_out_the_planted_head(planted):
    lm = load(ModelRef(model=str(planted.path)))
    prep = prepare_fact(lm, planted.fact, 0)
    noise = torch.randn((8, 1, lm.d_model), generator=torch.Generator().manual_seed(0)) * 3 * subject_noise_std(lm, [prep])
    grid = head_grid(lm, prep, Corrupted(prep.ids, noise, prep.subject))
    p_corr = corrupted_probs(lm, prep, Corrupted(prep.ids, noise, prep.subject)).mean()
    effects = grid - p_corr
    assert divmod(int(effects.argmax()), effects.shape[1]) == (planted.head_layer, planted.head)
    others = effects.clone()
    others[planted.head_layer, planted.head] = 0
    assert others.abs().max() < 1e-6 < effects[planted.head_layer, planted.head]
