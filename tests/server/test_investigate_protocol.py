"""The investigate protocol end to end on the planted model, through the MCP client: every example call it
renders is a valid request, and following it recovers the planted mechanisms.

Known ground truth (neurotrace.testing.planted_neurons): the answer after a token is read straight from that
token's residual (no attention or MLP needed), the fish-vs-cat residual direction maps to 'tree', and neuron
1:3 drives the 'star star star' loop after 'moon'.
"""

import json
import re

import pytest
from mcp import Client

import neurotrace
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server
from neurotrace.testing.planted_neurons import build_planted_neurons

pytestmark = pytest.mark.anyio

REQUESTS = {"logit_lens": neurotrace.LogitLensRequest, "attribute": neurotrace.AttributeRequest,
            "patch": neurotrace.PatchRequest, "find_neurons": neurotrace.FindNeuronsRequest,
            "probe": neurotrace.ProbeRequest, "steer": neurotrace.SteerRequest,
            "clamp_sweep": neurotrace.ClampSweepRequest}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted_neurons(tmp_path_factory.mktemp("planted-investigate") / "m")


def _calls(text: str) -> list[tuple[str, dict]]:
    out = []
    for line in text.splitlines():
        for match in re.finditer(r"`(\w+)` with ", line):
            decoder = json.JSONDecoder()
            body, _ = decoder.raw_decode(line[match.end():])
            out.append((match.group(1), body["request"]))
    return out


async def test_every_call_the_protocol_renders_is_a_valid_request(tmp_path):
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs")), raise_exceptions=True) as client:
        text = (await client.get_prompt("investigate", {})).messages[0].content.text
    calls = _calls(text)
    assert [tool for tool, _ in calls] == ["logit_lens", "attribute", "patch", "find_neurons", "probe", "steer",
                                           "clamp_sweep"]
    for tool, request in calls:
        REQUESTS[tool].model_validate(request)
    assert "does not provide" not in text


async def test_following_the_protocol_on_the_planted_model_recovers_its_mechanisms(tmp_path, planted):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    model = str(planted.path)
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        async def call(tool, request):
            result = await client.call_tool(tool, {"request": request})
            assert not result.is_error, result.content[0].text
            return result.structured_content

        text = (await client.get_prompt("investigate", {"model": model, "prompt": "the big fish", "target": "tree",
                                                         "corrupt": "the big cat"})).messages[0].content.text
        assert model in text
        lens = await call("logit_lens", {"model": model, "prompt": "the big fish", "target": "tree"})
        assert lens["first_top1_row"] == 0                      # read straight from the embedding
        patch = await call("patch", {"model": model, "clean": "the big fish", "corrupt": "the big cat",
                                     "target": "tree", "components": ["resid_pre", "attn_out", "mlp_out"]})
        cells = patch["top"] + patch.get("anti", [])                                         # no component needed
        assert all(abs(cell["restored"]) < 0.05 for cell in cells) and "No single cell restores" in patch["summary"]
        pairs = [["the big fish", "the big cat"], ["one fish", "one cat"], ["a red fish", "a red cat"],
                 ["its fish", "its cat"]]
        neurons = await call("find_neurons", {"model": model, "prompts": [a for a, _ in pairs],
                                              "control_prompts": ["the big dog", "one car", "a red tree", "its sun"],
                                              "n_permutations": 200})
        assert neurons["top"][0]["neuron"] == planted.concept_neuron
        steer = await call("steer", {"model": model, "direction_from": {"pairs": pairs, "layer": 1},
                                     "prompts": ["big red the", "two of", "car is"], "targets": ["tree"],
                                     "control_prompts": ["the big dog", "a red car"], "alphas": [0.25, 0.7],
                                     "max_new_tokens": 0})
        assert steer["verdict"] == "causal" and steer["monotonic"]
        loops = await call("find_neurons", {"model": model, "mode": "collapse", "max_new_tokens": 12,
                                            "prompts": ["the moon", "a big moon", "the city", "a big king"]})
        ref = loops["top"][0]["neuron"]
        assert ref == planted.loop_neuron and "clamp_sweep" in loops["next"]
        sweep = await call("clamp_sweep", {"model": model, "neurons": [ref], "prompts": ["the moon", "a big moon"],
                                           "values": [0], "max_new_tokens": 12})
        assert sweep["n_collapsed_baselines"] == 2 and sweep["n_recovered"] == 2
