"""patch through the real in-memory MCP client: metrics, top cells, heatmaps, errors."""

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

pytestmark = pytest.mark.anyio


async def test_patch_answers_with_top_cells_and_heatmaps_and_names_bad_fields(tmp_path, tiny_gpt2):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("patch", {"request": {
            "model": str(tiny_gpt2), "clean": "the capital of france is", "corrupt": "the capital of spain is",
            "metric": "p_target", "target": "paris", "components": ["resid_pre", "head_out"]}})
        assert not result.is_error, result.content
        out = result.structured_content
        assert out["differing"] == [3] and 1 <= len(out["top"]) <= 10
        restored = [c["restored"] for c in out["top"]]               # signed, largest first; anti-restoring apart
        assert restored == sorted(restored, reverse=True) and min(restored) > 0
        assert all(c["restored"] < -0.01 for c in out.get("anti", []))
        first = next(c for c in out["top"] if c["component"] == "resid_pre" and c["layer"] == 0)
        assert first["position"] == 3 and first["restored"] == pytest.approx(1.0, abs=1e-5)  # the subject token
        assert [c.type for c in result.content].count("image") == 1 and len(out["figures"]) == 2
        bad = await client.call_tool("patch", {"request": {"model": str(tiny_gpt2), "clean": "the cat is",
                                                           "corrupt": "the big cat is"}})
        assert bad.is_error and "corrupt" in bad.content[0].text and "Fix:" in bad.content[0].text
