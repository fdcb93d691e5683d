"""Read-only MCP resources: runs, manifests, artifacts, loaded models (and fact packs)."""

import importlib

RESOURCE_MODULES: list[str] = [
    "neurotrace.resources.runs",
    "neurotrace.resources.packs",
]


def register_all(server, lab) -> None:
    for name in RESOURCE_MODULES:
        importlib.import_module(name).register(server, lab)
