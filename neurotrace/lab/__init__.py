"""The lab: experiments as plain functions over a shared model cache and run store.

Every experiment is ``run_x(request, *, lab, reporter) -> XResult``; the MCP tools and the CLI are
thin faces over these functions. Nothing here imports ``mcp``.
"""
