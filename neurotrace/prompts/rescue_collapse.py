"""Prompt: rescue collapsed generations by clamping an MLP neuron (clamp_sweep)."""

from neurotrace.prompts._protocol import missing_tools_note, steps

TOOLS = ("load_model", "clamp_sweep", "plot")
#: arguments that describe one example together: give all of a group or none (the built-in example)
TOGETHER = (("model", "neuron"),)


def text(model: str, neuron: str) -> str:
    return steps(
        f"Rescue collapsed generations of {model} by clamping neuron {neuron}",
        "Some prompts make a model fall into repetition loops or degenerate text. Clamping one MLP neuron "
        "(a hidden unit of blocks.{layer}.mlp.hook_post) to a fixed value during generation tests whether that "
        "neuron drives the collapse: a clamp value that recovers collapsed baselines clearly more often than the "
        "same clamp on random control neurons (clamp_sweep's `specific` verdict) points at this neuron.",
        [
            f"Call `load_model` with {{\"request\": {{\"model\": \"{model}\"}}}} and check `model.n_layers` "
            f"and `model.d_mlp`: the neuron `{neuron}` must be `layer:index` with layer < n_layers and index < d_mlp.",
            f"Call `clamp_sweep` with {{\"request\": {{\"model\": \"{model}\", \"neurons\": [\"{neuron}\"], "
            "\"prompts\": [\"YOUR PROMPT 1\", \"YOUR PROMPT 2\"], \"max_new_tokens\": 50}} (or `prompt_file` for a prompt grid); "
            "keep its `run_id` as RUN. "
            "The default sweep is -100 ... 100 with the baseline (no clamp) always included; `position` "
            "'all' clamps every position, 'last' only the newest token.",
            "Read the result: `verdict` (specific / not above control / harmful against `controls` random "
            "neurons of the same layer, swept at the same values), `groups`, `baseline_collapse_types` (empty / "
            "loop / repetitive), `n_collapsed_baselines`, `n_recovered`, `best` and `per_value`; open the Markdown "
            "`report` for every collapsed baseline and the outputs that recovered it.",
            "Call `plot` with {\"request\": {\"run_id\": RUN, \"kind\": \"sweep_metrics\"}} to see collapse rate "
            "and text metrics per clamp value (the improvement-rate curve is already in the result).",
            "If most collapses are `empty` outputs of an instruct model, re-run with \"chat_template\": true; "
            "for BCR's TransformerLens numbers keep `prepend_bos` at its default (BOS for GPT-2).",
        ],
        [
            "No collapsed baselines means nothing to rescue: use prompts that loop (long generations, repetitive "
            "prompt grids) before concluding anything.",
            "A good clamp value recovers many collapsed baselines and induces few new collapses: compare the "
            "recovered fraction with the collapse rate at that value.",
            "Collapse flags come from auditable text metrics (distinct-n, repeated n-gram runs, compression "
            "ratio, entropy) with the thresholds written in the report; quote them.",
            "Quote the verdict with its numbers: 'not above control' means a random neuron of the same layer "
            "recovers about as much, so the effect is not specific to the neuron.",
        ])


def register(server) -> None:
    @server.prompt(name="rescue_collapse", title="Rescue collapsed generations",
                   description="Protocol: clamp an MLP neuron across a sweep of values to rescue prompts whose "
                               "generations collapse into loops (BCR paper example: gpt2, neuron 11:373).")
    async def rescue_collapse(model: str = "fact-gpt2", neuron: str = "5:0") -> str:
        return text(model, neuron) + await missing_tools_note(server, TOOLS)
