"""SKILL.md stays accurate: it names every registered tool and prompt, and claims nothing that is missing."""

from pathlib import Path

import pytest
from mcp import Client

from neurotrace.lab.lab import LabSettings
from neurotrace.server import build_server

SKILL = Path(__file__).resolve().parents[2] / "SKILL.md"


@pytest.mark.anyio
async def test_skill_md_matches_the_servers_tools_prompts_and_resources(tmp_path):
    text = SKILL.read_text(encoding="utf-8")
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs")), raise_exceptions=True) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
    assert all(f"`{name}`" in text for name in tools | prompts)
    missing = [u for u in resources | templates if f"`{u.replace('{+', '{')}`" not in text]
    assert not missing, f"SKILL.md does not list the resources {missing}"
