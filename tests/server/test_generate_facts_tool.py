"""generate_facts through the real in-memory MCP client: sampling, no sampling, packs as resources."""

import json

import mcp_types as types
import pytest
from mcp import Client

from neurotrace.lab.facts.generate import load_dataset
from neurotrace.lab.facts.packs import list_packs
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

GOOD = [
    {"template": "the capital of {} is", "subject": "france", "corrupt_subject": "italy", "answer": "paris",
     "relation": "capital_of", "context_from": "capital", "context_to": "language"},
    {"template": "the capital of {} is", "clean_subject": "england", "corrupt_subject": "spain",
     "target": " london", "relation": "capital_of"},
]
BAD = [
    {"template": "the capital of {} is {}", "clean_subject": "japan", "corrupt_subject": "spain", "target": "tokyo"},
    {"template": "the capital of {} is", "clean_subject": "germany", "corrupt_subject": "germany",
     "target": "berlin"},
    {"template": "the capital of {} is", "clean_subject": "italy", "corrupt_subject": "spain",
     "target": "Constantinople"},
    {"template": "the river of {} is", "clean_subject": "italy", "corrupt_subject": "spain", "target": "rome",
     "context_from": "capital", "context_to": "language"},
]
REPLY = ("Sure! Here are some facts for your experiment:\n```json\n" + json.dumps(GOOD + BAD, indent=1)
         + "\n```\nLet me know if you need more.")


def sampler(reply: str, seen: list):
    async def callback(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        seen.append(params)
        return types.CreateMessageResult(role="assistant", model="canned",
                                         content=types.TextContent(type="text", text=reply))
    return callback


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_sampled_facts_are_validated_and_invalid_drafts_dropped(tmp_path, tiny_gpt2, tiny_bert, mode):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    seen: list = []
    async with Client(build_server(lab=lab), raise_exceptions=True, sampling_callback=sampler(REPLY, seen),
                      mode=mode) as client:
        result = await client.call_tool("generate_facts", {"request": {
            "source": {"kind": "sampling", "domain": "capitals", "count": 10},
            "models": [str(tiny_gpt2), str(tiny_bert)]}})
    assert not result.is_error, result.content
    out = result.structured_content
    assert len(seen) == 1 and "capitals" in seen[0].messages[0].content.text
    assert [m.run_id for m in lab.store.list_runs("generate_facts")] == [out["run_id"]]  # one run per call
    assert out["n_facts"] == 2 and out["n_dropped"] == 4
    assert sorted(d["field"] for d in out["dropped"]) == ["context_from", "corrupt_subject", "target", "template"]
    assert out["next"].startswith("Call trace with {\"request\": {\"models\": [") and out["run_id"] in out["next"]
    facts = load_dataset(lab, out["run_id"])
    assert [(f.clean_subject, f.target) for f in facts] == [("france", "paris"), ("england", "london")]
    assert any(c.type == "resource_link" and c.uri == out["dataset_uri"] for c in result.content)


@pytest.mark.anyio
async def test_reply_without_json_is_a_clear_tool_error(tmp_path):
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs")), raise_exceptions=True,
                      sampling_callback=sampler("I cannot help with that.", [])) as client:
        result = await client.call_tool("generate_facts", {"request": {
            "source": {"kind": "sampling", "domain": "capitals"}, "models": []}})
    assert result.is_error and "holds no JSON list of facts" in result.content[0].text


@pytest.mark.anyio
async def test_client_without_sampling_gets_a_message_listing_the_packs(tmp_path):
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs")), raise_exceptions=True) as client:
        result = await client.call_tool("generate_facts", {"request": {
            "source": {"kind": "sampling", "domain": "astronomy"}}})
    assert result.is_error
    text = result.content[0].text
    assert "does not support sampling" in text
    assert all(name in text for name in list_packs())


@pytest.mark.anyio
async def test_pack_source_writes_dataset_and_run_config(tmp_path):
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs")), raise_exceptions=True) as client:
        result = await client.call_tool("generate_facts", {"request": {
            "source": {"kind": "pack", "domains": ["geography"]}, "models": []}})
        assert not result.is_error, result.content
        out = result.structured_content
        run_id = out["run_id"]
        manifest = json.loads((await client.read_resource(f"neurotrace://runs/{run_id}/manifest")).contents[0].text)
        dataset = json.loads((await client.read_resource(out["dataset_uri"])).contents[0].text)
    assert {a["path"] for a in manifest["artifacts"]} == {"dataset.json", "run_config.json", "report.html", "tool_result.json"}
    assert manifest["tool"] == "generate_facts" and manifest["status"] == "complete"
    assert dataset["domain"] == "geography" and len(dataset["facts"]) == out["n_facts"] >= 8


@pytest.mark.anyio
async def test_invalid_pack_fact_for_a_model_is_a_tool_error_naming_the_fact(tmp_path, tiny_gpt2):
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs")), raise_exceptions=True) as client:
        result = await client.call_tool("generate_facts", {"request": {
            "source": {"kind": "pack", "domains": ["geography"]}, "models": [str(tiny_gpt2)]}})
    assert result.is_error
    assert "facts[0].target" in result.content[0].text and "not in the vocabulary" in result.content[0].text


@pytest.mark.anyio
async def test_pack_resources_list_every_pack_and_serve_one(tmp_path):
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs")), raise_exceptions=True) as client:
        listing = json.loads((await client.read_resource("neurotrace://packs")).contents[0].text)
        pack = json.loads((await client.read_resource("neurotrace://packs/medicine")).contents[0].text)
        templates = await client.list_resource_templates()
        with pytest.raises(Exception, match="no fact pack"):
            await client.read_resource("neurotrace://packs/astrology")
    assert [p["domain"] for p in listing] == list_packs()
    assert all(p["n_facts"] >= 8 for p in listing)
    assert pack["domain"] == "medicine" and len(pack["facts"]) >= 8
    assert any(t.uri_template == "neurotrace://packs/{domain}" for t in templates.resource_templates)
