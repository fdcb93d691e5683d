"""Prompt: name features and score the names blind (capture -> fit_sae -> explain -> intervene)."""

from neurotrace.prompts._protocol import missing_tools_note, steps

TOOLS = ("capture", "fit_sae", "explain", "intervene")


def text(model: str, site: str) -> str:
    return steps(
        f"Name what features of {model} at {site} do, and check the names",
        "A name for a feature is a hypothesis: it should predict where the feature fires on text nobody used to "
        "write it. explain builds corpus evidence, has your own LLM (MCP sampling) or you write one sentence, "
        "then scores it blind on held-out excerpts against a scrambled-key null.",
        [
            f"Call `capture` with {{\"request\": {{\"model\": \"{model}\", \"sites\": [\"{site}\"], \"corpus\": "
            "\"python-docs\", \"max_tokens\": 200000}} to record the site over the built-in corpus. Keep its "
            "`run_id` as CAPTURE.",
            "Call `fit_sae` with {\"request\": {\"capture_run_id\": \"CAPTURE\", \"architecture\": \"topk\", "
            "\"k\": 32, \"seed\": 0}} and go on only if its verdict is usable. Keep its `run_id` as SAE (a "
            "SAELens or Gemma Scope folder works as the dictionary too).",
            f"Call `explain` with {{\"request\": {{\"model\": \"{model}\", \"dictionary\": \"SAE\", \"feature\": "
            "3}} (3 is a placeholder: pick features from fit_sae's top-activating table). With sampling, your "
            "LLM explains and judges in one call. Without it, the call returns evidence and a quiz: write one "
            "sentence, answer the quiz, and call explain again with quiz_run_id, explanation and answers "
            "{detection: [ids that fire], fuzzing: [ids marked correctly]}.",
            "Read the scores: balanced accuracy per scorer with its 95% interval and the scrambled-key null; "
            "the verdict is predictive / weak / not predictive (thresholds in `rule`). The name is stored with "
            "the dictionary.",
            "Test a predictive name causally: call `intervene` with {\"request\": {\"fit_sae_run_id\": \"SAE\", "
            "\"prompts\": [{\"prompt\": \"...\", \"target\": \"...\"}], \"policies\": [{\"kind\": "
            "\"ablate_features\", \"features\": [3]}]}} on prompts where the name says it should matter.",
        ],
        [
            "Only a predictive name counts as the feature's meaning; a weak one is a lead, not a finding.",
            "Never show the judge the evidence or activations: the quiz items are held out and unmarked.",
            "A causal verdict on a feature says whether the feature is named and how well the name predicts.",
        ])


def register(server) -> None:
    @server.prompt(name="explain_features", title="Name features and score the names blind",
                   description="Protocol: capture a corpus, fit or load a dictionary, explain features with "
                   "your LLM, score the names blind, then intervene.")
    async def explain_features(model: str = "fact-gpt2", site: str = "blocks.3.hook_resid_post") -> str:
        return text(model, site) + await missing_tools_note(server, TOOLS)
