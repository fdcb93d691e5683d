"""MCP prompts: one protocol per module, walking an agent through an experiment."""

import importlib

PROMPT_MODULES: list[str] = [
    "neurotrace.prompts.locate_fact",
    "neurotrace.prompts.compare_models",
    "neurotrace.prompts.rescue_collapse",
    "neurotrace.prompts.sae_features",
    "neurotrace.prompts.check_method",
]


def register_all(server) -> None:
    for name in PROMPT_MODULES:
        importlib.import_module(name).register(server)
