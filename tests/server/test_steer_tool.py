"""steer through the in-memory MCP client: verdict, effects, the figure as an image, errors by field."""

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server
from neurotrace.testing.planted_neurons import build_planted_neurons

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted_neurons(tmp_path_factory.mktemp("planted-steer-tool") / "m")


async def test_steer_returns_a_causal_verdict_for_the_planted_direction(tmp_path, planted):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    request = {"model": str(planted.path), "targets": ["tree"], "prompts": ["big red the", "two of"],
               "direction_from": {"pairs": [["the fish", "the cat"], ["a big fish", "a big cat"]], "layer": 1},
               "control_prompts": ["the big dog"], "alphas": [0.5, 0.7], "max_new_tokens": 3}
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("steer", {"request": request})
        bad = await client.call_tool("steer", {"request": {**request, "layers": [7]}})
    assert not result.is_error
    data = result.structured_content
    assert data["verdict"] == "causal" and data["effects"][-1]["direction"] > 0.9
    assert {"text", "image", "resource_link"} <= {block.type for block in result.content}
    assert bad.is_error and "layers:" in bad.content[0].text
