"""Prompt: compare a base model with its domain-tuned version on the same facts."""

from neurotrace.prompts._protocol import missing_tools_note, steps

TOOLS = ("generate_facts", "trace", "compare", "plot")


def text(base: str, tuned: str, domain: str) -> str:
    return steps(
        f"Compare {base} with {tuned} on {domain} facts",
        "Trace the same validated facts in both models and compare where (and whether) each stores them. "
        "Tuning on a domain should make its facts known and may move or sharpen the storage site.",
        [
            f"Call `generate_facts` with {{\"request\": {{\"source\": {{\"kind\": \"pack\", \"domains\": "
            f"[\"{domain}\"]}}, \"models\": [\"{base}\", \"{tuned}\"]}}}}: the facts are checked against both "
            "tokenizers. Keep its `run_id` as DATASET.",
            f"Call `trace` on DATASET for `{base}` and for `{tuned}` (one call per model, or one call listing both "
            "if the tool's schema accepts several models). Keep both run ids.",
            "Call `compare` with the two trace run ids: same facts, side-by-side curves, peak layers and a "
            "plain-language interpretation.",
            "Call `plot` on each trace run (and on the compare run if `plot` accepts it) for the heatmaps, the "
            "layer x model heatmap and peak-layer bars.",
            "As a control, repeat with a domain both models were trained on (e.g. geography): its traces "
            "should barely differ.",
        ],
        [
            "Knowledge first: count the facts each model knows (clean prediction correct). A base model that "
            "does not know the domain has no storage site to find; say that rather than over-reading its curve.",
            "Peak layer: does the tuned model store the facts at the same layer and position as the base model "
            "stores facts it already knew?",
            "Magnitude: compare indirect effects at the peak; a larger effect means more of p(target) flows "
            "through that site.",
            "For masked LMs: context patching vs mask patching shows whether the answer is carried by the "
            "context words or built at the mask; the sign of clean-minus-corrupt must be positive for a real "
            "effect.",
            "Cross-model reading: state in one sentence what tuning changed, and whether the control domain "
            "stayed the same.",
        ])


def register(server) -> None:
    @server.prompt(name="compare_models", title="Compare base and tuned models",
                   description="Protocol: trace the same facts in a base and a domain-tuned model and compare.")
    async def compare_models(base: str = "fact-gpt2", tuned: str = "fact-gpt2-cyber",
                             domain: str = "cybersecurity") -> str:
        return text(base, tuned, domain) + await missing_tools_note(server, TOOLS)
