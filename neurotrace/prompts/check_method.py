"""Prompt: check an attribution method against ground truth (benchmark)."""

from neurotrace.prompts._protocol import missing_tools_note, steps

TOOLS = ("benchmark", "trace")


def text(method: str) -> str:
    return steps(
        f"Check whether {method} finds what is really there",
        "Attribution methods can point at features that are correlated with the output but not causal, or "
        "miss causal features whose local gradient is flat. The benchmark uses circuits whose causal features "
        "are known by construction, so each method's answer can be scored.",
        [
            "Call `benchmark` (read its input schema for seeds, samples and which parts to run). It scores "
            "correlation, gradient saliency, integrated gradients, activation patching and a random baseline "
            "on the clean, confounded and suppressor circuits, and runs trace on a planted-circuit transformer.",
            f"Read the AUROC table for `{method}` across the circuits and the scrambled-label null.",
            "Read where trace puts its peak on the planted transformer (the planted MLP layer and subject "
            "position) and which head head-level patching singles out.",
        ],
        [
            "AUROC 1.0 = the method ranks every causal feature above every non-causal one; 0.5 = chance.",
            "Expected dissociation: correlation fails only on confounded, gradients fail only on suppressor, "
            "integrated gradients and patching recover every circuit, random stays near 0.5. If the table "
            "disagrees, the benchmark run is suspect - say so.",
            "Every method must fall to about 0.5 on the scrambled-label null; a method above chance there is "
            "picking up structure unrelated to the answer.",
            "Use the verdict to choose the method for real models: prefer methods that pass every circuit.",
        ])


def register(server) -> None:
    @server.prompt(name="check_method", title="Check a method against ground truth",
                   description="Protocol: score attribution methods on circuits with known answers (benchmark).")
    async def check_method(method: str = "gradient saliency") -> str:
        return text(method) + await missing_tools_note(server, TOOLS)
