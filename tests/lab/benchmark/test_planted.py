"""The planted-circuit transformer: the route is real, and trace / head patching find it."""

import pytest
import torch

from neurotrace import TraceRequest, run_trace
from neurotrace.lab.benchmark.planted_model import build_planted
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.forwards import target_probs
from neurotrace.lab.tracing.grids.grid import Corrupted, corrupted_probs, head_grid
from neurotrace.lab.tracing.noise import subject_noise_std
from neurotrace.lab.tracing.prepare import prepare_fact


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
        assert corrupted_probs(lm, prep, Corrupted(prep.ids, noise, prep.subject)).mean() < 0.3


@pytest.mark.parametrize("mode,corruption", [("exact", {"kind": "noise", "samples": 5}),
                                             ("approx", {"kind": "noise", "samples": 5}),
                                             ("exact", {"kind": "swap"})])
def test_trace_peaks_at_the_planted_mlp_layer_and_last_subject_token(planted, tmp_path, mode, corruption):
    lab = Lab(LabSettings(runs_dir=tmp_path))
    req = TraceRequest(trace_unknown=True, models=[str(planted.path)], facts=list(planted.facts), components=["mlp"], window=1, mode=mode,
                       heads=mode == "exact", corruption=corruption)
    result = run_trace(req, lab=lab, reporter=Reporter())
    facts = lab.store.read_json(result.run_id, "trace_results.json")["models"][str(planted.path)]["facts"]
    for f in facts:
        grid = torch.tensor(f["indirect"]["mlp"])
        assert divmod(int(grid.argmax()), grid.shape[1]) == (planted.mlp_layer, planted.subject_last_pos)
        if mode == "exact":                            # head patching through trace: the planted head
            heads = torch.tensor(f["heads"])
            assert divmod(int(heads.argmax()), heads.shape[1]) == (planted.head_layer, planted.head)
    peak = result.models[0].peak
    assert (peak.component, peak.layer, peak.position) == ("mlp", planted.mlp_layer, "last subject token")


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


def _restore_mlp(lm, prep, noise, layer, pos):
    """p(target) under subject noise with the clean MLP output of ``layer`` restored at ``pos``."""
    site = site_name("mlp_out", layer)
    clean = {}

    def save(act, site):
        clean["out"] = act[0].clone()

    with hooked(lm.model, lm.adapter, {site: save}):
        target_probs(lm, prep.ids[None], prep.predict_pos, prep.target_id)

    def add(act, site):
        act = act.clone()
        act[:, prep.subject[0]:prep.subject[1]] += noise
        return act

    def restore(act, site):
        act = act.clone()
        act[:, pos] = clean["out"][pos]
        return act

    ids = prep.ids[None].expand(len(noise), -1)
    with hooked(lm.model, lm.adapter, {"hook_embed": add, site: restore}):
        return target_probs(lm, ids, prep.predict_pos, prep.target_id).mean()


def test_hand_patching_restores_recall_only_at_the_planted_mlp_and_subject_token(planted):
    lm = load(ModelRef(model=str(planted.path)))
    prep = prepare_fact(lm, planted.facts[1], 1)
    noise = torch.randn((16, 1, lm.d_model), generator=torch.Generator().manual_seed(7)) * 3 * subject_noise_std(lm, [prep])
    p_corr = corrupted_probs(lm, prep, Corrupted(prep.ids, noise, prep.subject)).mean()
    for layer in range(lm.n_layers):
        for pos in range(len(prep.ids)):
            p = _restore_mlp(lm, prep, noise, layer, pos)
            if (layer, pos) == (planted.mlp_layer, planted.subject_last_pos):
                assert p > 0.95 > 0.3 > p_corr
            else:
                assert abs(p - p_corr) < 1e-6


def test_the_planted_model_is_quiet_outside_its_route(planted):
    lm = load(ModelRef(model=str(planted.path)))
    blocks = lm.model.transformer.h
    silent = [blocks[0].mlp, blocks[0].attn, blocks[1].attn, blocks[2].mlp]
    assert all((p == 0).all() for m in silent for p in m.parameters())
    d_head = lm.d_model // lm.model.config.n_head
    other = [h for h in range(lm.model.config.n_head) if h != planted.head]
    for h in other:
        assert (blocks[planted.head_layer].attn.c_proj.weight[h * d_head:(h + 1) * d_head] == 0).all()
    assert (lm.model.transformer.wpe.weight == 0).all()
