"""Prompt: IOI-style activation patching of a clean/corrupt pair (patch)."""

import json

from neurotrace.prompts._protocol import missing_tools_note, steps

TOOLS = ("patch", "attention")
#: arguments that describe one example together: give all of a group or none (the built-in example)
TOGETHER = (("clean", "corrupt"),)


def text(model: str, clean: str, corrupt: str) -> str:
    first = {"model": model, "clean": clean, "corrupt": corrupt, "metric": "logit_diff"}
    heads = {**first, "components": ["head_out", "head_out_pos"]}
    return steps(
        f"Which components of {model} carry the difference between two prompts?",
        "Activation patching runs the corrupt prompt with one clean activation written in and measures how much "
        "of the clean answer comes back. The prompts must have the same number of tokens.",
        [
            f"Call `patch` with {json.dumps({'request': first})}. The target defaults to the clean top-1 token and "
            "the contrast to the corrupt top-1 token; name them with `target` / `contrast` if those are wrong.",
            "Read `metric_clean` and `metric_corrupt` (a small gap means the corruption does not matter), then `top` "
            "and the resid_pre heatmap: the effect starts at the differing position (`differing`) and moves to "
            "the last position at some layer.",
            f"Call `patch` with {json.dumps({'request': heads})} to find the heads that move it.",
            "Call `attention` with the clean prompt and `heads` = the top heads to see which tokens they read.",
        ],
        [
            "`restored` = (value - corrupt) / (clean - corrupt): 1 fully restores, 0 does nothing, negative hurts.",
            "Use metric 'kl' when there is no natural contrast token; 'p_target' saturates for confident models.",
            "Patching is exact (no approximation); results are for this pair only.",
        ])


def register(server) -> None:
    @server.prompt(name="patch_components", title="Patch components between two prompts",
                   description="Protocol: activation patching (resid/attn/mlp per layer x position, then heads) of "
                               "a same-length clean/corrupt prompt pair, then attention of the top heads.")
    async def patch_components(model: str = "fact-gpt2", clean: str = "The capital of France is",
                               corrupt: str = "The capital of Japan is") -> str:
        return text(model, clean, corrupt) + await missing_tools_note(server, TOOLS)
