"""benchmark through the in-memory MCP client: both tables, dissociation, planted checks, figure, links."""

import json
from pathlib import Path

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server
from neurotrace.tools._runner import MAX_STRUCTURED_CHARS, MAX_TEXT_CHARS


@pytest.mark.anyio
async def test_benchmark_tool_returns_both_tables_the_figure_and_planted_checks(tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("benchmark", {"request": {"seeds": 4, "samples": 256, "ig_steps": 32}})
        assert not result.is_error, result.content
        out = result.structured_content
        assert len(out["table"]) == 5 * 4 and out["dissociation_holds"] is True
        assert out["jacobian_max_abs_diff"] <= 1e-6
        text = result.content[0].text
        assert "| integrated_gradients |" in text and "| method (planted GPT-2) |" in text
        assert out["report"].endswith("report.md") and len(text) <= MAX_TEXT_CHARS and "Next:" in text
        assert len(json.dumps(out)) <= MAX_STRUCTURED_CHARS - 500          # agent budget, with a margin
        checks = {c["method"].split(" (")[0]: c["correct"] for c in out["planted"]}
        assert checks["trace exact"] and checks["head patching"]
        # documented findings: neuron correlation finds the planted unit; saturated gradients do not
        assert checks["correlation over MLP neurons"] and not checks["gradient over MLP neurons"]
        assert (Path(out["planted_model"]) / "config.json").is_file() and out["planted_model"] in out["next"]
        assert [c.type for c in result.content].count("image") == 1
        links = [c.uri for c in result.content if c.type == "resource_link"]
        assert any(u.endswith("auroc.csv") for u in links) and any(u.endswith("planted.csv") for u in links)
        manifest = lab.store.manifest(out["run_id"])
        assert len(manifest.inputs) == 2                  # the exact and approx trace runs it read


@pytest.mark.anyio
async def test_benchmark_tool_rejects_bad_requests_by_field(tmp_path):
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs")), raise_exceptions=True) as client:
        bad = await client.call_tool("benchmark", {"request": {"seeds": 1}})
        assert bad.is_error and "seeds" in bad.content[0].text
        bad = await client.call_tool("benchmark", {"request": {"parts": ["planted", "planted"]}})
        assert bad.is_error and "parts" in bad.content[0].text
