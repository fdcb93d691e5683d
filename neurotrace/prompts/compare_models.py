"""Prompt: compare a base model with its domain-tuned version on the same facts.

Request examples come from the tools' request models (:func:`request_example`)."""

from neurotrace.lab.facts import GenerateFactsRequest
from neurotrace.lab.plotting import PlotRequest
from neurotrace.lab.tracing import CompareRequest, TraceRequest
from neurotrace.prompts._protocol import missing_tools_note, request_example, steps

TOOLS = ("generate_facts", "trace", "compare", "plot")
#: arguments that describe one example together: give all of a group or none (the built-in example)
TOGETHER = (("base", "tuned"),)
RUNS = ("DATASET", "TRACE")


def text(base: str, tuned: str, domain: str) -> str:
    dataset = request_example(GenerateFactsRequest, RUNS, source={"kind": "pack", "domains": [domain]},
                              models=[base, tuned])
    trace = request_example(TraceRequest, RUNS, models=[base, tuned], dataset_run_id="DATASET")
    compare = request_example(CompareRequest, RUNS, run_ids=["TRACE"])
    plot = request_example(PlotRequest, RUNS, run_id="TRACE", kind="layer_model_heatmap")
    return steps(
        f"Compare {base} with {tuned} on {domain} facts",
        "Trace the same validated facts in both models and compare where (and whether) each stores them. "
        "Tuning on a domain should make its facts known and may move or sharpen the storage site.",
        [
            f"Call `generate_facts` with {dataset}: the facts are checked against both tokenizers. Keep its "
            "`run_id` as DATASET.",
            f"Call `trace` with {trace}: both models on the same facts, each fact's noise seeded from its id, so "
            "the two traces differ only by the model. Keep the run id as TRACE.",
            f"Call `compare` with {compare} (or list two trace run ids): the same kind and token category side "
            "by side, aligned by relative depth (layer / n_layers) when the depths differ.",
            f"Call `plot` with {plot} (and the other kinds of `available_kinds`) for the heatmaps, the layer x "
            "model heatmap and the peak bars with their 95% bands.",
            "As a control, repeat with a domain both models were trained on (e.g. geography): its traces "
            "should barely differ.",
        ],
        [
            "Knowledge first: count the facts each model knows (clean prediction correct). A base model that "
            "does not know the domain has no storage site to find; say that rather than over-reading its curve.",
            "Site: does the tuned model's half-maximum range sit at the same relative depth and token category "
            "as the base model's for facts it already knew? Quote ranges with n and band, not single layers.",
            "Magnitude: compare indirect effects at the same kind and category; bands that overlap are no "
            "difference.",
            "For masked LMs: a context swap that moves p(target) by less than the stated minimum has no "
            "measurable effect; do not name a layer for it.",
            "Cross-model reading: state in one sentence what tuning changed, and whether the control domain "
            "stayed the same.",
        ])


def register(server) -> None:
    @server.prompt(name="compare_models", title="Compare base and tuned models",
                   description="Protocol: trace the same facts in a base and a domain-tuned model and compare.")
    async def compare_models(base: str = "fact-gpt2", tuned: str = "fact-gpt2-cyber",
                             domain: str = "cybersecurity") -> str:
        return text(base, tuned, domain) + await missing_tools_note(server, TOOLS)
