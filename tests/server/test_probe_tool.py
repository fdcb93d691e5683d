"""probe through the in-memory MCP client: per-layer accuracy, the best layer, a figure and errors by field."""

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server
from neurotrace.testing.planted_neurons import build_planted_neurons

pytestmark = pytest.mark.anyio

PROMPTS = [f"{animal} {a} {b}" for animal in ("fish", "cat") for a, b in
           [("big", "red"), ("old", "dog"), ("car", "tree"), ("sun", "road"), ("red", "big"), ("dog", "old")]]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted_neurons(tmp_path_factory.mktemp("planted-probe-tool") / "m")


async def test_probe_finds_the_planted_layer_and_returns_the_direction_link(tmp_path, planted):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    request = {"model": str(planted.path), "prompts": PROMPTS, "labels": ["fish"] * 6 + ["cat"] * 6, "k_folds": 3}
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("probe", {"request": request})
        bad = await client.call_tool("probe", {"request": {**request, "labels": ["x"] * 12}})
        plot = await client.call_tool("plot", {"request": {"run_id": result.structured_content["run_id"],
                                                           "options": {"title": "t"}}})
    assert not result.is_error
    data = result.structured_content
    assert data["best_layer"] == planted.probe_layer and data["best_accuracy"] == 1.0
    assert data["directions"].endswith("directions.safetensors")
    assert {"text", "image", "resource_link"} <= {block.type for block in result.content}
    assert bad.is_error and "labels:" in bad.content[0].text
    assert not plot.is_error and plot.structured_content["kinds"] == ["accuracy"]
