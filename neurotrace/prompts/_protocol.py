"""Shared helpers for the protocol prompts: render numbered steps and flag tools this build lacks."""

import json
from collections.abc import Sequence


def steps(title: str, intro: str, items: Sequence[str], reading: Sequence[str]) -> str:
    """A protocol as Markdown: a title, an intro, numbered steps and a 'how to read the results' list."""
    lines = [f"# {title}", "", intro, "", "## Steps", ""]
    lines += [f"{i}. {item}" for i, item in enumerate(items, 1)]
    lines += ["", "## How to read the results", ""]
    lines += [f"- {point}" for point in reading]
    return "\n".join(lines) + "\n"


async def missing_tools_note(server, needed: Sequence[str]) -> str:
    """A warning naming the tools of a protocol that this server does not register (empty if none)."""
    have = {tool.name for tool in await server.list_tools()}
    missing = [name for name in needed if name not in have]
    if not missing:
        return ""
    return ("\n> Note: this server build does not provide " + ", ".join(f"`{m}`" for m in missing)
            + " yet. Do the steps that use the available tools and report the others as not possible here.\n")


def request_example(model: type, placeholders: Sequence[str] = (), /, **fields: object) -> str:
    """``{"request": {...}}`` for ``fields``, validated against the tool's request ``model`` (so a stale
    field name fails when the prompt is rendered, not when an agent calls the tool); each string in
    ``placeholders`` (e.g. ``DATASET``) is written bare, standing for a run id the agent fills in."""
    model.model_validate(fields)
    text = json.dumps({"request": fields})
    for name in placeholders:
        text = text.replace(json.dumps(name), name)
    return text
