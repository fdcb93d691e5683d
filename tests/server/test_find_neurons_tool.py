"""find_neurons through the in-memory MCP client: ranked refs, figures, links and field-named errors."""

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server
from neurotrace.testing.planted_neurons import build_planted_neurons

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted_neurons(tmp_path_factory.mktemp("planted-find") / "m")


async def test_contrast_returns_the_planted_ref_an_image_and_the_table(tmp_path, planted):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    request = {"model": str(planted.path), "prompts": ["the fish", "a big fish", "one fish", "red fish"],
               "control_prompts": ["the dog", "a big car", "one tree", "red house"], "n_permutations": 200}
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("find_neurons", {"request": request})
        bad = await client.call_tool("find_neurons", {"request": {**request, "control_prompts": []}})
    assert not result.is_error
    data = result.structured_content
    assert data["top"][0]["neuron"] == planted.concept_neuron and data["table"].endswith("tables/neurons.csv")
    assert {"text", "image", "resource_link"} <= {block.type for block in result.content}
    assert bad.is_error and "control_prompts:" in bad.content[0].text
