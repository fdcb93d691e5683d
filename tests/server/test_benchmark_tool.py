"""benchmark through the in-memory MCP client: table, dissociation, planted checks, figure, links."""

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server.app import build_server


@pytest.mark.anyio
async def test_benchmark_tool_returns_table_figure_and_planted_checks(tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("benchmark", {"request": {"seeds": 4, "samples": 256}})
        assert not result.is_error, result.content
        out = result.structured_content
        assert len(out["table"]) == 5 * 4
        assert "| integrated_gradients |" in result.content[0].text
        checks = {c["method"].split(" (")[0]: c["correct"] for c in out["planted"]}
        assert checks["trace"] and checks["head patching"]
        assert [c.type for c in result.content].count("image") == 1
        assert any(c.type == "resource_link" and c.uri.endswith("auroc.csv") for c in result.content)
        bad = await client.call_tool("benchmark", {"request": {"seeds": 1}})
        assert bad.is_error and "seeds" in bad.content[0].text
