"""logit_lens through the real in-memory MCP client: structured result, figures as images, links, errors."""

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

pytestmark = pytest.mark.anyio


async def test_logit_lens_answers_with_rows_images_and_links_and_names_bad_fields(tmp_path, tiny_gpt2):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("logit_lens", {"request": {"model": str(tiny_gpt2), "prompt": "the cat is",
                                                                   "target": "big"}})
        assert not result.is_error, result.content
        out = result.structured_content
        assert out["rows"][0] == "embed" and len(out["p_target"]) == len(out["rows"]) == 3
        assert [c.type for c in result.content].count("image") == 1 and len(out["figures"]) == 2
        assert any(c.type == "resource_link" and c.uri == out["figures"][1] for c in result.content)
        assert any(c.type == "resource_link" and c.uri.endswith("logit_lens_results.json") for c in result.content)
        assert lab.store.manifest(out["run_id"]).status == "complete"
        bad = await client.call_tool("logit_lens", {"request": {"model": str(tiny_gpt2), "prompt": "the cat",
                                                                "tuned": True}})
        assert bad.is_error and "fit_prompts" in bad.content[0].text and "Fix:" in bad.content[0].text
