"""Prompt: explain one prediction - logit_lens -> attribute -> attention -> patch."""

import json

from neurotrace.prompts._protocol import missing_tools_note, steps

TOOLS = ("logit_lens", "attribute", "attention", "patch", "graph")
#: arguments that describe one example together: give all of a group or none (the built-in example)
TOGETHER = (("prompt", "target", "corrupt"),)


def _call(tool: str, request: dict) -> str:
    return f"`{tool}` with {json.dumps({'request': request})}"


def text(model: str, prompt: str, target: str, corrupt: str) -> str:
    return steps(
        f"Explain why {model} predicts {target!r} after {prompt!r}",
        "Four looks at one prediction: when it forms (logit lens), who writes it directly (direct logit "
        "attribution), where those heads look (attention), and what is causally necessary (activation patching "
        "from a corrupted prompt of the same token length).",
        [
            f"Call {_call('logit_lens', {'model': model, 'prompt': prompt, 'target': target})}. Read `p_target` "
            "per row and `first_top1_layer`: the layer whose block first makes the answer top-1 (`first_top1_row` is "
            "its row index, one more: row 0 is the embedding).",
            f"Call {_call('attribute', {'model': model, 'prompt': prompt, 'target': target, 'corrupt_prompt': corrupt})}"
            ". Read `components` (they add up to `metric_value`), `top_heads`, `top_neurons` and `patching` "
            "(estimates vs `exact`).",
            f"Call {_call('attention', {'model': model, 'prompt': prompt, 'heads': ['5:0']})}, with the top heads "
            "of step 2 as `heads` ('L:H'): read `last_position` (which tokens they read) and `top_heads`.",
            f"Call {_call('patch', {'model': model, 'clean': prompt, 'corrupt': corrupt, 'target': target, 'components': ['resid_pre', 'attn_out', 'mlp_out', 'head_out']})}"
            ". Read `top` (restored fraction 1 = fully restored) and the heatmaps.",
            "If per-layer transcoders exist for this model (a folder in circuit-tracer's or SAELens' layout), call "
            f"{_call('graph', {'model': model, 'prompt': prompt, 'target': target, 'transcoders': {'kind': 'folder', 'path': 'transcoders'}})}"
            " for the features that carry the answer; trust them as far as `replacement_score` and `checks` go.",
        ],
        [
            "Direct attribution is not causation: a head with a large direct share may be compensated; trust "
            "components that also restore the answer under patching.",
            "Attribution-patching estimates are first order; where `exact` differs a lot, quote `exact`.",
            "Restoring the residual at the subject token at layer 0 restores the input itself: it locates the "
            "difference, not a mechanism. Look for the layers where the effect moves to the last position.",
            "Everything rests on one prompt pair: repeat with other subjects before generalising.",
        ])


def register(server) -> None:
    @server.prompt(name="explain_prediction", title="Explain a prediction",
                   description="Protocol: logit_lens -> attribute -> attention -> patch on one prompt and a "
                               "same-length corrupt prompt: when, who, where and what is necessary.")
    async def explain_prediction(model: str = "fact-gpt2", prompt: str = "The capital of France is",
                                 target: str = "Paris", corrupt: str = "The capital of Japan is") -> str:
        return text(model, prompt, target, corrupt) + await missing_tools_note(server, TOOLS)
