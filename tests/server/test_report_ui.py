"""The run report as an MCP Apps UI: the viewer resource, the tools' _meta, the page for Apps clients only."""

import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.server import MCPServer
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent

from neurotrace import resources
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server
from neurotrace.tools._report_ui import REPORT_UI, VIEWER, offer_report_ui, report_app, report_blocks

pytestmark = pytest.mark.anyio

APPS_CLIENT = [advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})]


def _server(lab: Lab) -> MCPServer:
    server = MCPServer(name="t", extensions=[report_app()])

    async def run_something(ctx: Context) -> CallToolResult:
        """Write a run and return it."""
        with lab.store.open_run("demo", {"x": 1}) as run:
            run.write_json("result.json", {"ok": True})
            run.set_summary("done")
        data = {"run_id": run.run_id, "summary": "done", "artifacts": [run.uri("result.json")]}
        return CallToolResult(content=[TextContent(type="text", text="done"), *report_blocks(ctx, lab, data)],
                              structured_content=data)

    server.add_tool(run_something)
    resources.register(server, lab)
    offer_report_ui(server, ["run_something", "no_such_tool"])
    return server


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


async def test_the_viewer_is_served_as_an_mcp_app_resource(lab):
    async with Client(_server(lab)) as client:
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        assert listed[REPORT_UI].mime_type == APP_MIME_TYPE
        read = await client.read_resource(REPORT_UI)
        assert read.contents[0].text == VIEWER and "ui/initialize" in VIEWER


async def test_offered_tools_name_the_viewer_in_their_meta(lab):
    async with Client(_server(lab)) as client:
        tool = (await client.list_tools()).tools[0]
        assert tool.meta["ui"]["resourceUri"] == REPORT_UI


async def test_an_apps_client_gets_the_report_page_embedded_for_the_user(lab):
    async with Client(_server(lab), extensions=APPS_CLIENT) as client:
        result = await client.call_tool("run_something", {})
    embedded = [b for b in result.content if b.type == "resource"]
    assert len(embedded) == 1 and embedded[0].resource.mime_type == "text/html"
    assert embedded[0].annotations.audience == ["user"]
    assert embedded[0].resource.text.startswith("<!DOCTYPE html>") and "done" in embedded[0].resource.text
    links = [b for b in result.content if b.type == "resource_link"]
    assert [str(b.uri).rsplit("/", 1)[-1] for b in links] == ["report.html"]


async def test_a_client_without_apps_gets_only_a_link_to_the_report(lab):
    async with Client(_server(lab)) as client:
        result = await client.call_tool("run_something", {})
        assert [b.type for b in result.content] == ["text", "resource_link"]
        uri = str(result.content[1].uri)
        assert uri.endswith("/artifacts/report.html")
        page = await client.read_resource(uri)
    assert page.contents[0].text.startswith("<!DOCTYPE html>")


async def test_the_real_server_offers_the_report_ui_on_tools_that_write_runs(lab):
    async with Client(build_server(lab=lab), extensions=APPS_CLIENT) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["trace"].meta["ui"]["resourceUri"] == REPORT_UI
        assert not (tools["release_model"].meta or {}).get("ui")
        request = {"source": {"kind": "pack", "domains": ["geography"]}, "models": ["fact-gpt2"]}
        result = await client.call_tool("generate_facts", {"request": request})
        assert not result.is_error, result.content
        pages = [b.resource.text for b in result.content if b.type == "resource"]
        assert len(pages) == 1 and "generate_facts" in pages[0]
        viewer = await client.read_resource(REPORT_UI)
        assert viewer.contents[0].text == VIEWER
