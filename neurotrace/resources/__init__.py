"""Read-only MCP resources: runs, manifests, artifacts, loaded models and fact packs."""

from neurotrace.resources import packs, runs

MODULES = (runs, packs)


def register(server, lab) -> None:
    """Add every resource and resource template of :data:`MODULES` to ``server``."""
    for module in MODULES:
        module.register(server, lab)
