"""Prompt: locate where a model stores facts (generate_facts -> trace -> plot -> compare).

Every request example is built by :func:`request_example` from the tool's own request model, so the
prompt cannot drift from the schema (``model=`` for a tool that takes ``models``)."""

from neurotrace.lab.facts import GenerateFactsRequest
from neurotrace.lab.plotting import PlotRequest
from neurotrace.lab.tokenize import TokenizeRequest
from neurotrace.lab.tracing import CompareRequest, TraceRequest
from neurotrace.prompts._protocol import missing_tools_note, request_example, steps

TOOLS = ("generate_facts", "tokenize", "trace", "plot", "compare")
RUNS = ("DATASET", "TRACE", "TRACE2")


def text(model: str, domain: str) -> str:
    dataset = request_example(GenerateFactsRequest, RUNS, source={"kind": "pack", "domains": [domain]},
                              models=[model])
    tokens = request_example(TokenizeRequest, RUNS, texts=["The capital of France is", "The capital of Japan is"],
                             models=[model])
    trace = request_example(TraceRequest, RUNS, models=[model], dataset_run_id="DATASET")
    swap = request_example(TraceRequest, RUNS, models=[model], dataset_run_id="DATASET", corruption={"kind": "swap"})
    plot = request_example(PlotRequest, RUNS, run_id="TRACE")
    compare = request_example(CompareRequest, RUNS, run_ids=["TRACE", "TRACE2"])
    return steps(
        f"Locate where {model} stores {domain} facts",
        "Causal tracing (ROME) corrupts the subject of a factual prompt, then restores one clean hidden state at "
        "a time (per layer and token position) and measures how much of p(target) comes back. Sites whose "
        "restoration brings the answer back are where the fact flows.",
        [
            "Read the resource `neurotrace://packs` and check that the domain exists (or draft facts with "
            f"`generate_facts` source kind 'sampling' if your client supports sampling). `{domain}` is the pack "
            "used below.",
            f"Call `generate_facts` with {dataset}. Check `n_facts`, `validation` (every fact must be "
            "usable for the model: `n_ok` = `n_facts`) and `dropped`. Keep its `run_id` as DATASET.",
            "A subject swap needs the corrupt prompt to have the clean prompt's token count in every model "
            "traced: `swap_mismatches` lists the facts whose corrupt subject breaks that, with same-length "
            f"`suggestions` from the packs. To see any string's tokens, call `tokenize` with {tokens}.",
            f"Call `trace` with {trace} (read the tool's input schema for corruption, noise samples, window, "
            "components and `rome_compat`). It returns, per model, the facts it knows, the facts it skipped and why, "
            "the window and noise level used, and `readings`: half-maximum layer ranges per component and token "
            "category with n and a 95% band, where the answer arrives at the last token, and cautions. Keep its "
            "`run_id` as TRACE.",
            f"If the reading carries a layer-0 caution, call `trace` with {swap} (or `\"window\": 1`) and keep "
            "the storage claim only if it survives.",
            f"Call `plot` with {plot} to draw every trace figure (or pass `kind`, e.g. one of `available_kinds`). "
            "Look at the layer x token maps per kind and the restoration-by-layer curves with their bands.",
            f"Trace a second model or held-out facts (TRACE2), then call `compare` with {compare} for the curves "
            "side by side, aligned by relative depth when the depths differ.",
        ],
        [
            "Only facts the model knows (clean prediction correct) count: unknown facts are skipped before any "
            "grid and listed (trace_unknown: true traces them as a control, never averaged). If most facts are "
            "unknown, the model does not hold this domain - say so.",
            "p(target) corrupted must be well below clean, otherwise the corruption did nothing and the trace "
            "is uninformative (raise the noise scale or use subject swap).",
            "Report a layer range, not a single argmax: the summary gives each effect's half-maximum range, its "
            "95% band and n. A stretch covering every layer locates nothing.",
            "An MLP effect at the last subject token in early-to-middle layers is the ROME signature of storage; "
            "attention at the last token in later layers moves the answer to the output. Compare MLP and "
            "attention at the same token category, as the summary does.",
            "Restoring the residual at the last token gives back the clean run at the last layer by "
            "construction; the informative number is the arrival layer, where half the effect is back.",
            "With `rome_compat: true` the trace follows ROME's conventions exactly (window 10, ROME's noise and "
            "token buckets); docs/trace-conventions.md lists how the default differs.",
        ])


def register(server) -> None:
    @server.prompt(name="locate_fact", title="Locate stored facts",
                   description="Protocol: build a fact set, causal-trace it, plot and compare - where does "
                               "the model store these facts?")
    async def locate_fact(model: str = "fact-gpt2", domain: str = "geography") -> str:
        return text(model, domain) + await missing_tools_note(server, TOOLS)
