"""MCP prompts: one protocol per module, walking an agent through an experiment."""

from neurotrace.prompts import (
    check_method,
    compare_models,
    diff_models,
    explain_features,
    explain_prediction,
    investigate,
    locate_and_edit,
    locate_fact,
    patch_components,
    rescue_collapse,
    sae_features,
)

MODULES = (locate_fact, compare_models, rescue_collapse, sae_features, check_method, explain_prediction,
           patch_components, investigate, explain_features,
           locate_and_edit, diff_models)


#: each prompt's module by the prompt's name (a module is named like its prompt)
BY_NAME = {m.__name__.rsplit(".", 1)[-1]: m for m in MODULES}


def register(server) -> None:
    """Add every prompt of :data:`MODULES` to ``server``."""
    for module in MODULES:
        module.register(server)
