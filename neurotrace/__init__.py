"""neurotrace: a mechanistic-interpretability lab for agents, served over MCP.

The core lives in :mod:`neurotrace.lab` (plain Python + torch, no MCP); the MCP server in
:mod:`neurotrace.server`, the thin tool faces in :mod:`neurotrace.tools`, and the CLI in
:mod:`neurotrace.cli`.
"""

__version__ = "0.1.0"
