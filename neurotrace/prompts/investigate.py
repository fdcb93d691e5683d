"""Prompt: from a behaviour to a mechanism - logit_lens -> attribute -> patch -> find_neurons -> steer / clamp
with controls -> report."""

import json

from neurotrace.prompts._protocol import missing_tools_note, steps

TOOLS = ("logit_lens", "attribute", "patch", "find_neurons", "probe", "steer", "clamp_sweep", "intervene")
#: arguments that describe one example together: give all of a group or none (the built-in example)
TOGETHER = (("prompt", "target", "corrupt"),)


def _call(tool: str, request: dict) -> str:
    return f"`{tool}` with {json.dumps({'request': request})}"


def text(model: str, prompt: str, target: str, corrupt: str) -> str:
    pairs = [[prompt, corrupt]]
    return steps(
        f"Investigate why {model} answers {target!r} after {prompt!r}",
        "A behaviour is explained when a component you found by looking also changes the behaviour when you "
        "intervene on it, more than matched controls do. Go from cheap, correlational looks to causal tests, "
        "and keep every run_id: the report cites them. The corrupt prompt must have the same token length "
        f"as the prompt and lack the behaviour ({corrupt!r}). Add a few more prompt pairs of the same kind "
        "where a step asks for prompt sets (4-8 pairs make the statistics meaningful).",
        [
            f"When does the answer form? Call {_call('logit_lens', {'model': model, 'prompt': prompt, 'target': target})}"
            ". Note `first_top1_layer` (the layer whose block first makes the target top-1; `first_top1_row` is a row "
            "index, one more, since row 0 is the embedding) as L*.",
            "Who writes it? Call "
            f"{_call('attribute', {'model': model, 'prompt': prompt, 'target': target, 'corrupt_prompt': corrupt})}"
            ". Note the top `components`, `top_heads` and `top_neurons` ('L3N120' = neuron '3:120').",
            "What is necessary? Call "
            f"{_call('patch', {'model': model, 'clean': prompt, 'corrupt': corrupt, 'target': target, 'components': ['resid_pre', 'attn_out', 'mlp_out', 'head_out']})}"
            ". Keep the components with `restored` near 1; their layers are the candidate layers.",
            "Which neurons? Call "
            f"{_call('find_neurons', {'model': model, 'prompts': [prompt], 'control_prompts': [corrupt], 'layers': [0]})}"
            " with your prompt sets and the candidate layers from step 3 (`layers`). Read `top` ('L:i' refs, "
            "Cohen's d, permutation p with Bonferroni / BH). If the behaviour is a degenerate generation (loops), "
            "use `mode: 'collapse'` on a mixed prompt set instead.",
            "Is the difference a direction? Optionally call "
            f"{_call('probe', {'model': model, 'prompts': [prompt, corrupt, '...', '...'], 'labels': ['yes', 'no', 'yes', 'no']})}"
            " with all your prompts: `best_layer` is where the distinction is linearly readable.",
            "Test causally, with controls. Steering: "
            f"{_call('steer', {'model': model, 'direction_from': {'pairs': pairs + pairs, 'layer': 0}, 'prompts': [corrupt], 'targets': [target], 'control_prompts': ['an unrelated prompt']})}"
            " with your pairs, `layer` from steps 1-3 (or `{'probe_run_id': ..., 'layer': L}` from step 5): read "
            "`verdict` and the random / shuffled / control-prompt columns. Neurons: ablate the top refs with "
            "`intervene` (policy `{'kind': 'set_neurons', 'neurons': ['L:i'], 'value': 0}`; its verdict compares with "
            "other neurons of the same layer, and a prompt's `foil` makes the metric the target-foil logit "
            "difference) or, for "
            "collapse, sweep them with "
            f"{_call('clamp_sweep', {'model': model, 'neurons': ['0:0'], 'prompts': [prompt], 'values': [0, 5]})}"
            " (the ref from step 4) and compare with a low-ranked neuron of the same layer.",
            "Report: state the mechanism in one sentence, then a table of claim, tool, run_id and number (e.g. "
            "'MLP 3 is necessary: patch restored 0.92, run ...'), the controls each causal claim beat, the "
            "prompts it rests on, and what is still only correlational.",
        ],
        [
            "Evidence ladder: logit lens, attribution, find_neurons and probes are correlational; patching, "
            "ablation, clamping and steering are interventions. A mechanism claim needs at least one "
            "intervention that beats its controls.",
            "steer's `causal` verdict needs the effect at the largest alpha to exceed 3x the random-direction "
            "control and 2x the shuffled-pairs control, with control prompts moving less than half as much; "
            "`confounded` means a control moved nearly as much: the direction is not specific.",
            "find_neurons p-values are per neuron; with thousands tested, quote the Bonferroni or BH value. A top "
            "neuron that an ablation or clamp does not move is a correlate, not a cause.",
            "A probe that reads a concept at layer L says it is present, not that the model uses it: steer along "
            "the probe direction to find out.",
            "Everything rests on the prompts given: say how many, and repeat a causal test on fresh prompts before "
            "generalising.",
        ])


def register(server) -> None:
    @server.prompt(name="investigate", title="From a behaviour to a mechanism",
                   description="Protocol: logit_lens -> attribute -> patch the top components -> find_neurons -> "
                               "steer or clamp with controls -> a report citing every run.")
    async def investigate(model: str = "fact-gpt2", prompt: str = "The capital of France is",
                          target: str = "Paris", corrupt: str = "The capital of Japan is") -> str:
        return text(model, prompt, target, corrupt) + await missing_tools_note(server, TOOLS)
