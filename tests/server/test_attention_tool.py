"""attention through the real in-memory MCP client: head scores, last-position focus, figures, errors."""

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

pytestmark = pytest.mark.anyio


async def test_attention_answers_with_scores_focus_and_pattern_grids_and_names_bad_fields(tmp_path, tiny_llama):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("attention", {"request": {"model": str(tiny_llama), "prompt": "the cat is big",
                                                                  "heads": ["1:0"], "subject": "cat"}})
        assert not result.is_error, result.content
        out = result.structured_content
        assert [f["head"] for f in out["last_position"]] == ["1:0"]
        assert set(out["top_heads"]) == {"previous_token", "induction", "duplicate_token", "subject"}
        assert [c.type for c in result.content].count("image") == 1 and len(out["figures"]) == 2
        assert any(c.type == "resource_link" and c.uri.endswith("arrays/patterns.npy") for c in result.content)
        bad = await client.call_tool("attention", {"request": {"model": str(tiny_llama), "prompt": "the cat",
                                                               "heads": ["9:0"]}})
        assert bad.is_error and "heads[0]" in bad.content[0].text
