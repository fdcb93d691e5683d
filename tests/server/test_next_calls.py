"""A result's `next` that spells out a call gives a request the tool accepts (an agent pastes it as is)."""

import json

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.tracing import TraceRequest
from neurotrace.server import build_server

pytestmark = pytest.mark.anyio


def _request_in(text: str) -> dict:
    """The first JSON object in ``text`` (the call's arguments)."""
    start = text.index("{")
    obj, _ = json.JSONDecoder().raw_decode(text[start:])
    return obj


async def test_generate_facts_and_load_model_name_a_valid_trace_request(tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        facts = await client.call_tool("generate_facts", {"request": {
            "source": {"kind": "pack", "domains": ["geography"]}, "models": ["fact-gpt2"]}})
        nxt = facts.structured_content["next"]
        call = _request_in(nxt)
        req = TraceRequest.model_validate(call["request"])          # was model='fact-gpt2': refused
        assert req.models == ["fact-gpt2"] and req.dataset_run_id == facts.structured_content["run_id"]
        loaded = await client.call_tool("load_model", {"request": {"model": "fact-gpt2"}})
        assert TraceRequest.model_validate(_request_in(loaded.structured_content["next"])["request"]).models == [
            "fact-gpt2"]
