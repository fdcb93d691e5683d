"""The MCP server: a thin face over :mod:`neurotrace.lab` (no tensor work here)."""
