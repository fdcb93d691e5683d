"""``neurotrace://schemas/{tool}``: a tool's full input and result schemas (the wire list is compact)."""

import json

from mcp.server import MCPServer

from neurotrace.lab.errors import NotFound
from neurotrace.lab.lab import Lab
from neurotrace.resources._faults import resource_faults


def register(server: MCPServer, lab: Lab) -> None:
    @server.resource("neurotrace://schemas/{tool}", name="tool_schema", mime_type="application/json",
                     description="A tool's full input schema (every nested field) and its result schema.")
    async def tool_schema(tool: str) -> str:
        with resource_faults():
            tools = {t.name: t for t in await MCPServer.list_tools(server)}
            if tool not in tools:
                raise NotFound("tool", f"no tool {tool!r}", fix="use one of: " + ", ".join(sorted(tools)))
            full = tools[tool]
            return json.dumps({"name": full.name, "description": full.description,
                               "inputSchema": full.input_schema, "outputSchema": full.output_schema}, indent=1)
