"""The run's ``report.html`` as the tool result's UI, for clients that speak MCP Apps.

MCP Apps (extension ``io.modelcontextprotocol/ui``, in the SDK as :mod:`mcp.server.apps`) lets a tool
name a ``ui://`` resource in ``_meta.ui.resourceUri``; a host that negotiated the extension renders that
resource in a sandboxed iframe and posts the tool's result into it. The resource must be fixed per
tool, while every run has its own report, so the UI here is a small viewer: it completes the Apps
handshake (``ui/initialize`` -> ``ui/notifications/initialized``), waits for
``ui/notifications/tool-result`` and shows the report the result carries as an embedded ``text/html``
resource (marked for the user's eyes, not the model's). Clients without Apps get no embedded page,
only a resource link to ``report.html``, like every other artifact; the summary text is unchanged.

Wiring: :func:`report_app` goes into ``MCPServer(extensions=[...])``, :func:`offer_report_ui` stamps
the experiment tools after they are registered, and :func:`report_blocks` extends a packaged result.
"""

from collections.abc import Iterable
from typing import Any

from mcp.server.apps import Apps, client_supports_apps
from mcp_types import Annotations, ContentBlock, EmbeddedResource, ResourceLink, TextResourceContents

from neurotrace.lab.errors import LabError
from neurotrace.lab.lab import Lab
from neurotrace.lab.runs import URI_PREFIX

REPORT_UI = "ui://neurotrace/report.html"
UI_META = {"ui": {"resourceUri": REPORT_UI}}
REPORT = "report.html"

VIEWER = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>neurotrace run report</title>
<style>html,body{margin:0;font:14px system-ui,sans-serif}#wait{padding:1em;color:#555}
iframe{border:0;width:100%;height:85vh;display:none}</style></head>
<body><div id="wait">Waiting for the run's report...</div><iframe id="report" sandbox="allow-scripts"
title="run report"></iframe>
<script>
(function () {
  var nextId = 1;
  function send(msg) { window.parent.postMessage(Object.assign({jsonrpc: '2.0'}, msg), '*'); }
  function show(result) {
    var blocks = (result && result.content) || [], page = null;
    blocks.forEach(function (b) {
      if (b && b.type === 'resource' && b.resource && b.resource.mimeType === 'text/html') { page = b.resource.text; }
    });
    var wait = document.getElementById('wait'), frame = document.getElementById('report');
    var sized = function () {
      send({method: 'ui/notifications/size-changed', params: {height: document.documentElement.scrollHeight}});
    };
    if (page) {
      frame.onload = sized;   // after the report and its inline figures have loaded
      frame.srcdoc = page; frame.style.display = 'block'; wait.style.display = 'none';
    } else {
      var text = blocks.filter(function (b) { return b && b.type === 'text'; }).map(function (b) { return b.text; });
      wait.textContent = text.join('\\n') || 'This result has no report.';
      wait.style.whiteSpace = 'pre-wrap';
      sized();
    }
  }
  window.addEventListener('message', function (event) {
    var msg = event.data || {};
    if (msg.id === 1 && (msg.result || msg.error)) { send({method: 'ui/notifications/initialized', params: {}}); }
    if (msg.method === 'ui/notifications/tool-result') { show(msg.params); }
  });
  send({id: nextId++, method: 'ui/initialize', params: {protocolVersion: '2026-01-26',
        appInfo: {name: 'neurotrace-report', version: '1'}, appCapabilities: {}}});
})();
</script></body></html>
"""


def report_app() -> Apps:
    """The Apps extension with its one ``ui://`` resource: the report viewer."""
    apps = Apps()
    apps.add_html_resource(REPORT_UI, VIEWER, name="run_report_viewer", title="neurotrace run report",
                           description="Shows the report.html of the run a tool call wrote (MCP Apps).")
    return apps


def offer_report_ui(server: Any, names: Iterable[str] | None = None) -> None:
    """Point tools' ``_meta.ui.resourceUri`` at the viewer (call after registering them): the named ones,
    or by default every tool whose result carries a ``run_id`` (the ones that write a run).

    ``MCPServer.add_tool`` takes ``meta=`` but every tool module registers itself; stamping here keeps
    that in one place. The SDK (mcp 2.3) has no public setter, hence its tool manager."""
    manager = server._tool_manager
    if names is None:
        names = [t.name for t in manager.list_tools()
                 if "run_id" in ((t.fn_metadata.output_schema or {}).get("properties") or {})]  # not the cached property
    for name in names:
        tool = manager.get_tool(name)
        if tool is not None:
            tool.meta = {**(tool.meta or {}), **UI_META}


def report_blocks(ctx: Any, lab: Lab, data: Any) -> list[ContentBlock]:
    """A link to the run's report (every client) and, where the client speaks Apps, the page itself."""
    run_id = data.get("run_id") if isinstance(data, dict) else None
    if not isinstance(run_id, str):
        return []
    try:
        path = lab.store.artifact_path(run_id, REPORT)
    except LabError:
        return []
    uri = f"{URI_PREFIX}/{run_id}/artifacts/{REPORT}"
    listed = {str(u) for u in data.get("artifacts") or []}
    blocks: list[ContentBlock] = [] if uri in listed else [
        ResourceLink(type="resource_link", uri=uri, name=REPORT, mime_type="text/html")]
    if client_supports_apps(ctx):
        blocks.append(EmbeddedResource(type="resource", annotations=Annotations(audience=["user"]),
                                       resource=TextResourceContents(uri=uri, mime_type="text/html",
                                                                     text=path.read_text(encoding="utf-8"))))
    return blocks
