"""graph through the real in-memory MCP client: paths, checks, the graph file and view as artifacts, errors."""

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

pytestmark = pytest.mark.anyio


async def test_graph_answers_with_paths_checks_and_artifacts_and_names_bad_fields(tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("graph", {"request": {
            "model": "fact-gpt2", "prompt": "The capital of France is", "target": "Paris",
            "transcoders": {"kind": "random", "seed": 1}, "max_feature_nodes": 64, "check_top": 3}})
        assert not result.is_error, result.content
        out = result.structured_content
        assert out["targets"] == ["Paris"] and 0 <= out["replacement_score"] <= 1
        assert out["paths"][0]["nodes"][-1] == "logit 'Paris'" and len(out["checks"]["rows"]) == 6
        assert any(a.endswith("graph/graph.json") for a in out["artifacts"])
        assert any(a.endswith("views/graph.html") for a in out["artifacts"])
        bad = await client.call_tool("graph", {"request": {"model": "fact-gpt2", "prompt": "x",
                                                           "transcoders": {"kind": "folder", "path": "nowhere"}}})
        assert bad.is_error and "transcoders.path" in bad.content[0].text
