"""``neurotrace-mcp``: build the server and run it over stdio or streamable HTTP.

The lifespan creates one :class:`~neurotrace.lab.lab.Lab` (model cache + run store) shared by every
request. HTTP binds 127.0.0.1 unless told otherwise.
"""

import argparse
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server import MCPServer

from neurotrace import __version__, prompts, resources, tools
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.cache import parse_bytes
from neurotrace.tools._runner import AppContext

INSTRUCTIONS = """neurotrace is a mechanistic-interpretability lab over PyTorch language models.
Every experiment tool writes one run directory and returns a summary, structured results, figures and
resource links (neurotrace://runs/{run_id}/...). Start with list_models / load_model; the embedded
offline models are fact-gpt2, fact-gpt2-cyber (causal) and fact-bert, fact-bert-cyber (masked).
Locate stored facts with generate_facts then trace; rescue collapsed generations with clamp_sweep;
study features with capture -> fit_sae -> intervene; check methods against ground truth with benchmark.
Use the prompts for step-by-step protocols."""


def build_server(settings: LabSettings | None = None, lab: Lab | None = None) -> MCPServer:
    """A ready server whose lifespan holds one Lab (pass ``lab`` to share one, e.g. in tests)."""

    lab = lab if lab is not None else Lab(settings)

    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[AppContext]:
        yield AppContext(lab=lab)

    server = MCPServer(name="neurotrace", version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan)
    tools.register(server)
    resources.register(server, lab)
    prompts.register(server)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="neurotrace-mcp", description="neurotrace MCP server")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--runs-dir", default=None, help="run directory root (env NEUROTRACE_RUNS_DIR)")
    parser.add_argument("--memory-budget", default=None, help="model cache budget, e.g. 8GiB "
                                                               "(env NEUROTRACE_MEMORY_BUDGET)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("NEUROTRACE_LOG", "WARNING"), stream=sys.stderr)
    settings = LabSettings.from_env(runs_dir=args.runs_dir and os.path.abspath(args.runs_dir),
                                    memory_budget_bytes=parse_bytes(args.memory_budget))
    server = build_server(settings)
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
