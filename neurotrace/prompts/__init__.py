"""MCP prompts: one protocol per module, walking an agent through an experiment."""

from neurotrace.prompts import check_method, compare_models, locate_fact, rescue_collapse, sae_features
from neurotrace.prompts import explain_prediction, investigate, patch_components

MODULES = (locate_fact, compare_models, rescue_collapse, sae_features, check_method, explain_prediction,
           patch_components, investigate)


def register(server) -> None:
    """Add every prompt of :data:`MODULES` to ``server``."""
    for module in MODULES:
        module.register(server)
