"""The tool list's wire schemas are pinned: a schema change is made on purpose, never by accident.

``snapshots/list_tools.json`` holds every tool's name, description, input and output schema and
annotations as a client receives them. After an intended change regenerate it with
``NEUROTRACE_UPDATE_SNAPSHOTS=1 python -m pytest tests/contracts/test_list_tools_snapshot.py`` and
review the diff. The whole list is also kept small enough for an agent's context.
"""

import json
import os
from pathlib import Path

import pytest
from mcp import Client

from neurotrace import EXPERIMENTS
from neurotrace.lab.lab import LabSettings
from neurotrace.server import build_server, instructions

SNAPSHOT = Path(__file__).parent / "snapshots" / "list_tools.json"
MAX_TOOL_LIST_CHARS = 30_000  # issue 22 item 7; 28,034 measured with 25 tools (a client without MCP Apps)


async def wire_tools(tmp_path: Path) -> list[dict]:
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs"))) as client:
        tools = (await client.list_tools()).tools
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in sorted(tools, key=lambda t: t.name)]


@pytest.mark.anyio
async def test_tool_list_matches_the_snapshot(tmp_path):
    tools = await wire_tools(tmp_path)
    text = json.dumps(tools, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("NEUROTRACE_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert SNAPSHOT.is_file(), "no snapshot yet: run with NEUROTRACE_UPDATE_SNAPSHOTS=1"
    pinned = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert [t["name"] for t in tools] == [t["name"] for t in pinned], "the set of tools changed"
    for now, then in zip(tools, pinned, strict=True):
        assert now == then, f"tool {now['name']!r} changed on the wire; regenerate the snapshot if intended"


@pytest.mark.anyio
async def test_the_tool_list_fits_an_agents_context(tmp_path):
    size = len(json.dumps(await wire_tools(tmp_path), separators=(",", ":")))
    assert size <= MAX_TOOL_LIST_CHARS, f"tools/list is {size} characters (budget {MAX_TOOL_LIST_CHARS})"


def test_wire_descriptions_are_whole_sentences_not_cut_at_an_abbreviation():
    """A field's wire description is its first sentence; 'e.g.' used to end it ('Embedded name (e.g.')."""
    from neurotrace.tools._wire import first_sentence

    assert first_sentence("Causal LM: embedded name (e.g. 'fact-gpt2'), HuggingFace id or local dir. More.") == \
        "Causal LM: embedded name, HuggingFace id or local dir."
    assert first_sentence("Figure kind, e.g. heatmap or aie. Other.") == "Figure kind, e.g. heatmap or aie."
    assert first_sentence("Options, e.g. {'model': 'fact-gpt2', 'fact': 0, 'style': 'paper'} and more words.") == \
        "Options."

    def descriptions(node):
        if isinstance(node, dict):
            yield from ([node["description"]] if isinstance(node.get("description"), str) else [])
            for v in node.values():
                yield from descriptions(v)
        elif isinstance(node, list):
            for v in node:
                yield from descriptions(v)

    wire = list(descriptions([t["inputSchema"] for t in json.loads(SNAPSHOT.read_text(encoding="utf-8"))]))
    assert len(wire) > 20 and not [d for d in wire if d.endswith(("e.g.", "i.e."))]   # required fields only


@pytest.mark.anyio
async def test_every_experiment_advertises_its_results_required_fields_and_their_types(tmp_path):
    """Item 7 of issue 22: a client can validate structuredContent (the SDK's client does, on every call)."""
    tools = {t["name"]: t for t in await wire_tools(tmp_path)}
    for e in EXPERIMENTS:
        out = tools[e.name]["outputSchema"]
        full = e.result.model_json_schema()
        common = out.get("required", []) if "anyOf" in out else []   # required in every branch (run_id)
        branches = [common + b["required"] for b in out["anyOf"]] if "anyOf" in out else [out["required"]]
        assert sorted(branches[0]) == sorted(full.get("required", [])), e.name
        assert (e.detachable and ["run_id", "status"] in branches) or len(branches) == 1, e.name
        for name, typed in out.get("properties", {}).items():
            assert typed["type"] != "string" and name in full["properties"], (e.name, name)


@pytest.mark.anyio
async def test_shared_options_leave_the_wire_but_stay_in_the_schema_resource_and_are_accepted(tmp_path):
    """seed, device and batch_size are stated once in the instructions, not per tool; the schema resource
    keeps them, and a call that passes them is validated against the full request model."""
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs"))) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        wire = tools["logit_lens"].input_schema["properties"]["request"]["properties"]
        assert not {"seed", "device"} & set(wire) and "model" in wire
        assert all(t.meta is None or "ui" not in t.meta for t in tools.values())   # no MCP Apps here
        full = json.loads((await client.read_resource("neurotrace://schemas/logit_lens")).contents[0].text)
        assert {"seed", "device"} <= set(json.dumps(full).replace('"', " ").split())
        bad = await client.call_tool("logit_lens", {"request": {"model": "fact-gpt2", "prompt": "x",
                                                                 "device": "tpu9"}})
        assert bad.is_error and "device" in bad.content[0].text
    assert all(f'"{name}"' in instructions() for name in ("seed", "device", "batch_size"))
