"""edit through the in-memory MCP client: the edited model's name works in the next tool call, the base is
untouched, plot redraws the run, and a bad layer is an error naming the field."""

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

pytestmark = pytest.mark.anyio

REQUEST = {"model": "fact-gpt2", "pack": "geography", "max_facts": 1, "layers": [1], "max_new_tokens": 0,
           "value": {"n_contexts": 1, "steps": 2}, "covariance": {"tokens": 256}}


async def test_edit_returns_a_model_name_the_next_tool_call_can_use(tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs", threads=1))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("edit", {"request": REQUEST})
        edited = result.structured_content["edited_model"]
        lens = await client.call_tool("logit_lens", {"request": {"model": edited, "prompt": "The capital of France is"}})
        base = await client.call_tool("logit_lens", {"request": {"model": "fact-gpt2", "prompt": "The capital of France is"}})
        plot = await client.call_tool("plot", {"request": {"run_id": result.structured_content["run_id"]}})
        bad = await client.call_tool("edit", {"request": {**REQUEST, "layers": [40]}})
    assert not result.is_error and edited == f"fact-gpt2@edit:{result.structured_content['run_id']}"
    assert {"text", "image", "resource_link"} <= {block.type for block in result.content}
    assert not lens.is_error and not base.is_error
    fingerprints = {lab.store.manifest(r.structured_content["run_id"]).models[m]
                    for r, m in ((lens, edited), (base, "fact-gpt2"))}
    assert len(fingerprints) == 2                                  # two models: the edit and the untouched base
    assert not plot.is_error and plot.structured_content["kinds"] == ["metrics"]
    assert bad.is_error and "layers:" in bad.content[0].text
