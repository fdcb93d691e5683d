"""attribute through the real in-memory MCP client: shares that add up, patching checks, figures, errors."""

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

pytestmark = pytest.mark.anyio


async def test_attribute_answers_with_shares_and_patching_and_names_bad_fields(tmp_path, tiny_gpt2):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("attribute", {"request": {
            "model": str(tiny_gpt2), "prompt": "the capital of france is", "target": "paris", "contrast": "rome",
            "corrupt_prompt": "the capital of spain is", "check_top": 2, "top_k": 4}})
        assert not result.is_error, result.content
        out = result.structured_content
        assert sum(c["value"] for c in out["components"]) == pytest.approx(out["metric_value"], abs=1e-4)
        assert len(out["top_heads"]) == 4 and out["patching"]["heads"][0]["exact"] is not None
        assert "frozen" in out["convention"] and [c.type for c in result.content].count("image") == 1 and len(out["figures"]) == 2
        bad = await client.call_tool("attribute", {"request": {"model": str(tiny_gpt2), "prompt": "the cat",
                                                               "corrupt_prompt": "the big cat"}})
        assert bad.is_error and "corrupt_prompt" in bad.content[0].text
