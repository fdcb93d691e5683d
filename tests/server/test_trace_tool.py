"""trace and compare through the real in-memory MCP client: causal and masked paths, figures,
links, errors, and the base vs domain-tuned comparison on the shipped models."""

import json

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.embedded import embedded_model_path
from neurotrace.server import build_server

pytestmark = pytest.mark.anyio
FACT = {"id": "f0", "template": "the capital of {} is", "clean_subject": "france", "corrupt_subject": "spain",
        "target": "paris", "context_from": "capital", "context_to": "river"}


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


async def test_trace_causal_and_masked_models_through_mcp(lab, tiny_gpt2, tiny_bert):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        progress = []

        async def on_progress(done, total, message):
            progress.append(done)

        result = await client.call_tool("trace", {"request": {
            "trace_unknown": True, "models": [str(tiny_gpt2), str(tiny_bert)], "facts": [FACT], "corruption": {"kind": "swap"}}},
            progress_callback=on_progress)
        assert not result.is_error, result.content
        out = result.structured_content
        lm_kinds = {m["model"]: m["lm_kind"] for m in out["models"]}
        assert lm_kinds == {str(tiny_gpt2): "causal", str(tiny_bert): "masked"}
        assert [c.type for c in result.content].count("image") >= 1
        assert any(c.type == "resource_link" and c.uri.endswith("trace_results.json") for c in result.content)
        assert progress and progress == sorted(progress)
        results = json.loads((await client.read_resource(out["results"])).contents[0].text)
        bert = results["models"][str(tiny_bert)]["facts"][0]
        assert len(bert["curves"]["scored_patch"]) == len(bert["curves"]["context_patch"]) == 2
        assert bert["tokens"][bert["predict_pos"]] == "[MASK]"
        compare = await client.call_tool("compare", {"request": {"run_ids": [out["run_id"]]}})
        assert not compare.is_error, compare.content
        assert set(compare.structured_content["models"]) == set(lm_kinds)


async def test_trace_errors_name_the_field_and_the_server_keeps_serving(lab, tiny_gpt2):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        bad = await client.call_tool("trace", {"request": {"trace_unknown": True, "models": [str(tiny_gpt2)], "facts": [FACT], "window": 99}})
        assert bad.is_error and "window" in bad.content[0].text and "Fix:" in bad.content[0].text
        none = await client.call_tool("trace", {"request": {"trace_unknown": True, "models": [str(tiny_gpt2)]}})
        assert none.is_error and "facts" in none.content[0].text
        unknown = await client.call_tool("trace", {"request": {"trace_unknown": True, "models": ["no/such-model"], "facts": [FACT]}})
        assert unknown.is_error and "model" in unknown.content[0].text
        pack = await client.call_tool("trace", {"request": {"trace_unknown": True, "models": [str(tiny_gpt2)], "pack": "nonsense"}})
        assert pack.is_error and "domain" in pack.content[0].text
        ok = await client.call_tool("list_models", {})
        assert not ok.is_error


async def test_domain_tuned_model_knows_the_domain_facts_its_base_does_not(lab):
    if embedded_model_path("fact-gpt2-cyber") is None:
        pytest.skip("embedded models are absent")
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("trace", {"request": {
            "trace_unknown": True, "models": ["fact-gpt2", "fact-gpt2-cyber"], "pack": "cybersecurity", "max_facts": 2, "components": ["mlp"],
            "corruption": {"kind": "noise", "samples": 2}}})
        assert not result.is_error, result.content
        base, tuned = result.structured_content["models"]
        assert tuned["n_known"] == 2 and base["n_known"] < 2
        assert tuned["peak"] is not None and tuned["peak"]["effect"] > 0.1
        assert any("Across models" in line for line in result.structured_content["interpretation"])
