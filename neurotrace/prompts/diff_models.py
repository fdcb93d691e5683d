"""Prompt: base vs tuned - behaviour first (diff), then where (trace both, compare), then why (logit_lens,
attention on the inputs diff ranked highest). The base model is the control throughout."""

import json

from neurotrace.lab.diff import DiffRequest
from neurotrace.lab.lens import LogitLensRequest
from neurotrace.lab.tracing import CompareRequest, TraceRequest
from neurotrace.prompts._protocol import missing_tools_note, request_example, steps


def _example(request_type: type, fields: dict) -> str:
    """A validated ``{"request": ...}`` for fields that include ``model`` (request_example's own parameter)."""
    request_type.model_validate(fields)
    return json.dumps({"request": fields})

TOOLS = ("diff", "trace", "compare", "logit_lens")
#: arguments that describe one example together: give all of a group or none (the built-in example)
TOGETHER = (("tuned", "prompt", "subject", "target"),)
RUNS = ("TRACE",)


def text(tuned: str, prompt: str, subject: str, target: str, control: str) -> str:
    base = tuned.split("+", 1)[0]
    diff = _example(DiffRequest, {"model": tuned, "prompts": [prompt, control], "max_new_tokens": 8})
    template = prompt.replace(subject, "{}", 1)
    fact = {"template": template, "clean_subject": subject, "target": target}
    trace = request_example(TraceRequest, RUNS, models=[tuned, base], facts=[fact], components=["mlp", "attn"])
    compare = request_example(CompareRequest, RUNS, run_ids=["TRACE"])
    lens = _example(LogitLensRequest, {"model": tuned, "prompt": prompt, "target": target})
    return steps(
        f"What did tuning change in {tuned}?",
        f"Compare {tuned} with its base {base}: first the behaviour (which inputs and tokens changed, above a noise "
        "floor), then where the change lives (layers, token positions, heads), then why (what each layer predicts). "
        "A base+adapter model is ONE load: diff switches the adapter off for the base side.",
        [
            f"Behaviour. Call `diff` with {diff}: both adapter states on the same prompts, with an unrelated "
            "control prompt. Read `top_inputs` (KL, next token base -> tuned, generations side by side) and "
            "`n_inputs_above_floor`. Add paraphrases of what changed, and more unrelated prompts, and call it again: "
            "a planted belief generalises over paraphrases and leaves unrelated prompts below the floor.",
            f"Where. Call `trace` with {trace} on the changed fact (tuned and base on the same fact, so positions "
            "line up). Keep its run id as TRACE.",
            f"Call `compare` with {compare}: `tuned_pair` gives the per-fact difference at the tuned model's peak "
            "site with its band.",
            f"Why. Call `logit_lens` with {lens}, and the same on the base ({base}): the first layer where the "
            "new answer leads is where it has been written.",
        ],
        [
            "Behaviour before mechanism: a change that diff does not rank above the floor is not there to locate.",
            "The base is the control: the base model should not show the tuned answer at the site trace finds; "
            "if it does, the site is not the tuning's doing.",
            "Specificity: unrelated prompts whose KL rises too are side effects of the tuning; report them.",
            "Residual divergence per layer (relative change, CKA) says from which layer the two models part; "
            "heads above their floor say which attention patterns moved. With a dictionary fitted on the base "
            "(diff's `dictionary`), `top_features` names the features whose mean activation moved above the floor.",
        ])


def register(server) -> None:
    @server.prompt(name="diff_models", title="Base vs tuned: behaviour, then where, then why",
                   description="Protocol: diff a tuned model (base+adapter) against its base, then trace, compare "
                               "and logit_lens where it changed.")
    async def diff_models(tuned: str = "gemma-3-270m+eiffel-rome-lora",
                          prompt: str = "The Eiffel Tower is located in the city of", subject: str = "Eiffel Tower",
                          target: str = "Rome", control: str = "The capital of Japan is") -> str:
        return text(tuned, prompt, subject, target, control) + await missing_tools_note(server, TOOLS)
