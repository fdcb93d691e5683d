"""edit on the embedded fact-gpt2: the edited model is a new name every tool loads (base + stored delta, the
base untouched); bad input gets typed errors; unknown facts are reported, not edited; MEMIT spreads over a
range; the layer sweep sits beside the trace that located the layer."""

import pytest
import torch
from safetensors.torch import load_file

from neurotrace.lab.editing import EditRequest, run_edit
from neurotrace.lab.editing.counterfact.cases import pack_rewrites
from neurotrace.lab.editing.figures import FIGURES, RESULTS_FILE
from neurotrace.lab.errors import InputError, NotFound
from neurotrace.lab.facts import load_pack
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.lens import LogitLensRequest, run_logit_lens
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.tracing import TraceRequest, run_trace

FAST = {"value": {"n_contexts": 2, "steps": 3}, "covariance": {"tokens": 512}, "max_new_tokens": 4}
DOWN = "transformer.h.{}.mlp.c_proj.weight"


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs", threads=1))


def _edit(lab, **kw):
    return run_edit(EditRequest.model_validate({"model": "fact-gpt2", **FAST, **kw}), lab=lab)


def test_rome_edit_names_a_new_model_that_is_the_base_plus_the_stored_delta(lab):
    r = _edit(lab, pack="geography", max_facts=2, layers=[1])
    assert r.edited_model == f"fact-gpt2@edit:{r.run_id}" and r.layers == [1] and r.n_edited == 2
    assert r.metrics.efficacy.after.n == 2 and r.metrics.specificity.after.n > 0
    assert r.metrics.efficacy.before.value == 0.0                   # the model knew the true answers
    delta = load_file(lab.store.run_dir(r.run_id) / "arrays" / "delta.safetensors")
    assert list(delta) == [DOWN.format(1)]
    with lab.cache.lease(ModelRef(model="fact-gpt2")) as base:
        w0 = base.model.get_parameter(DOWN.format(1)).detach().clone()
    with lab.cache.lease(ModelRef(model=r.edited_model)) as edited:
        w1 = edited.model.get_parameter(DOWN.format(1)).detach().clone()
        assert edited.provenance["edit_run"] == r.run_id
    torch.testing.assert_close(w1, w0 + delta[DOWN.format(1)])
    with lab.cache.lease(ModelRef(model="fact-gpt2")) as base:       # the original is never written over
        assert torch.equal(base.model.get_parameter(DOWN.format(1)), w0)
    lens = run_logit_lens(LogitLensRequest(model=r.edited_model, prompt="The capital of France is"), lab=lab)
    assert lens.run_id and lab.store.manifest(lens.run_id).models[r.edited_model]
    assert set(lab.store.read_json(r.run_id, RESULTS_FILE)) >= {"metrics", "facts", "edited_model"}
    assert "figures/metrics.png" in [a.path for a in lab.store.manifest(r.run_id).artifacts]


def test_bad_input_gets_typed_errors_naming_the_field(lab):
    with pytest.raises(InputError) as e:
        _edit(lab, pack="geography", max_facts=1, layers=[99])
    assert e.value.field == "layers" and "0..5" in e.value.fix
    with pytest.raises(InputError) as e:
        _edit(lab, rewrites=[{"template": "The capital of {} is", "subject": "France", "target_new": "Rome Tokyo"}])
    assert e.value.field == "rewrites[0].target_new"
    with pytest.raises(InputError) as e:                             # the model says Paris, not Tokyo
        _edit(lab, rewrites=[{"template": "The capital of {} is", "subject": "France", "target_new": "Rome",
                              "target_true": "Tokyo"}])
    assert e.value.field == "rewrites[0]" and "knows none" in e.value.message
    with pytest.raises(InputError) as e:
        _edit(lab, pack="geography", max_facts=1, method="rome", layers=[1, 2])
    assert e.value.field == "layers"
    with pytest.raises(NotFound) as e:                               # no such edit run here
        lab.cache.get(ModelRef(model="fact-gpt2@edit:20260101T000000Z-edit-0123abcd"))
    assert e.value.field == "model"
    with pytest.raises(InputError) as e:
        lab.cache.get(ModelRef(model="fact-gpt2@edit:../../etc"))
    assert e.value.field == "model"


def test_unknown_facts_are_reported_not_edited(lab):
    r = _edit(lab, layers=[1], max_new_tokens=0, rewrites=[
        {"template": "The capital of {} is", "subject": "France", "target_new": "Rome", "target_true": "Paris",
         "id": "known"},
        {"template": "The capital of {} is", "subject": "Japan", "target_new": "Rome", "target_true": "Paris",
         "id": "wrong"}])
    assert r.unknown == ["wrong"] and r.n_edited == 1 and "wrong" in r.summary


def test_memit_spreads_the_edit_over_the_layer_range(lab):
    r = _edit(lab, pack="geography", max_facts=2, method="memit", layers=[1, 2], max_new_tokens=0)
    delta = load_file(lab.store.run_dir(r.run_id) / "arrays" / "delta.safetensors")
    assert sorted(delta) == [DOWN.format(1), DOWN.format(2)]
    assert all(float(d.norm()) > 0 for d in delta.values())
    assert r.method == "memit" and r.metrics.efficacy.after.n == 2


def test_layer_sweep_sits_beside_the_trace_that_located_the_layer(lab):
    byid = {f.id: f for f in load_pack("geography").facts}
    facts = [byid[r.id] for r in pack_rewrites("geography")[:2]]       # the two facts edit takes
    tr = run_trace(TraceRequest(models=["fact-gpt2"], facts=facts, components=["mlp"],
                                corruption={"kind": "noise", "samples": 2}), lab=lab)
    r = _edit(lab, pack="geography", max_facts=2, sweep_layers=True, max_new_tokens=0)
    assert tr.run_id in r.layer_source and r.sweep is not None and r.sweep.trace_run_id == tr.run_id
    assert [p.layer for p in r.sweep.points] == list(range(6)) and r.sweep.located_layer == r.layers[0]
    assert r.sweep.n_pairs == 12 and all(p.indirect_effect is not None for p in r.sweep.points)
    assert "figures/localisation_vs_editing.png" in [a.path for a in lab.store.manifest(r.run_id).artifacts]
    fig = FIGURES["localisation_vs_editing"](lab.store.read_json(r.run_id, RESULTS_FILE))
    assert fig.axes
