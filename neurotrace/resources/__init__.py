"""Read-only MCP resources: runs, manifests, artifacts, loaded models, fact packs and full tool schemas."""

from neurotrace.resources import packs, runs, schemas

MODULES = (runs, packs, schemas)


def register(server, lab) -> None:
    """Add every resource and resource template of :data:`MODULES` to ``server``."""
    for module in MODULES:
        module.register(server, lab)
