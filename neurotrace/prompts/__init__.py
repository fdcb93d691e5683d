"""MCP prompts: one protocol per module, walking an agent through an experiment."""

import importlib

PROMPT_MODULES: list[str] = []


def register_all(server) -> None:
    for name in PROMPT_MODULES:
        importlib.import_module(name).register(server)
