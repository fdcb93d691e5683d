"""Issue 23 item 3: every check that needs no forward runs before the job. Layer, head and neuron indices
are checked against the model's real shape (read from its config, without loading it) by ``lab.check``,
so a detached call is refused at once instead of failing inside its job - with the run's own message."""

import pytest
from mcp import Client

from neurotrace import EXPERIMENTS
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

P = "The capital of France is"
REQUESTS = {e.name: e.request for e in EXPERIMENTS}
# (tool, request, the field the refusal names, a word of its message); fact-gpt2: 6 layers, 4 heads, MLP 384
BAD = [
    ("find_neurons", {"model": "fact-gpt2", "prompts": [P, "x y"], "control_prompts": ["a b", "c d"],
                      "layers": [99]}, "layers", "out of range (6 layers)"),
    ("find_neurons", {"model": "fact-gpt2", "mode": "top_examples", "neuron": "1:999999", "prompts": [P]},
     "neuron", "the MLP is 384 wide"),
    ("clamp_sweep", {"model": "fact-gpt2", "neurons": ["99:1"], "prompts": ["a"], "values": [0]}, "neurons",
     "out of range (6 layers)"),
    ("clamp_sweep", {"model": "fact-gpt2", "neurons": ["1:9999999"], "prompts": ["a"], "values": [0]}, "neurons",
     "the MLP is 384 wide"),
    ("probe", {"model": "fact-gpt2", "prompts": [P, "a", "b", "c"], "labels": ["x", "y", "x", "y"], "layers": [99],
               "k_folds": 2}, "layers", "out of range"),
    ("attention", {"model": "fact-gpt2", "prompt": P, "heads": ["1:99"]}, "heads[0]", "6 layers x 4 heads"),
    ("attention", {"model": "fact-gpt2", "prompt": P, "subject": "Berlin"}, "subject", "does not occur"),
    ("patch", {"model": "fact-gpt2", "clean": P, "corrupt": "The capital of Japan is",
               "components": ["resid_pre", "path"], "receivers": ["9:99"]}, "receivers[0]", "not a receiver head"),
    ("patch", {"model": "fact-gpt2", "clean": P, "corrupt": "The capital of Japan is",
               "components": ["resid_pre"], "receivers": ["3:1"]}, "receivers", "need components to include"),
    ("edit", {"model": "fact-gpt2", "rewrites": [{"template": "The capital of {} is", "subject": "France",
                                                  "target_new": "Rome"}], "layers": [99]}, "layers", "6 layers"),
    ("steer", {"model": "fact-gpt2", "direction_from": {"pairs": [[P, "a b"], ["c d", "e f"]], "layer": 99},
               "prompts": ["x"], "targets": ["Rome"]}, "direction_from.layer", "out of range (6 layers)"),
]


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


@pytest.mark.parametrize("tool, fields, field, says", BAD, ids=[f"{b[0]}-{b[2]}" for b in BAD])
def test_an_index_outside_the_model_is_refused_by_the_check_without_loading_it(lab, tool, fields, field, says):
    request = REQUESTS[tool](**fields)
    with pytest.raises(InputError) as refused:
        lab.check(request)
    assert refused.value.field == field and says in refused.value.message and refused.value.fix
    assert lab.cache.listing() == []   # decided from the config alone


def test_indices_inside_the_model_pass_the_check(lab):
    for tool, fields, _, _ in BAD:
        good = {**fields}
        if "layers" in good:
            good["layers"] = [1]
        if "neuron" in good:
            good["neuron"] = "1:3"
        if "neurons" in good:
            good["neurons"] = ["1:3"]
        if "heads" in good:
            good["heads"] = ["1:3"]
        if "subject" in good:
            good["subject"] = "France"
        if "receivers" in good:
            good["components"], good["receivers"] = ["resid_pre", "path"], ["3:1"]
        if "direction_from" in good:
            good["direction_from"] = {**good["direction_from"], "layer": 1}
        lab.check(REQUESTS[tool](**good))


@pytest.mark.anyio
async def test_a_detached_call_with_a_bad_index_is_refused_at_once_and_starts_no_job(lab):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        reply = await client.call_tool("find_neurons", {"request": BAD[0][1], "wait": False})
    assert reply.is_error and "layers" in reply.content[0].text and "Fix:" in reply.content[0].text
    assert not lab.store.root.exists() or not list(lab.store.root.iterdir())   # no run was made
