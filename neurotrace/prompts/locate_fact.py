"""Prompt: locate where a model stores facts (generate_facts -> trace -> plot -> compare)."""

from neurotrace.prompts._protocol import missing_tools_note, steps

TOOLS = ("generate_facts", "trace", "plot", "compare")


def text(model: str, domain: str) -> str:
    return steps(
        f"Locate where {model} stores {domain} facts",
        "Causal tracing (ROME) corrupts the subject of a factual prompt, then restores one clean hidden state at "
        "a time (per layer and token position) and measures how much of p(target) comes back. Sites whose "
        "restoration brings the answer back are where the fact flows.",
        [
            "Read the resource `neurotrace://packs` and check that the domain exists (or draft facts with "
            f"`generate_facts` source kind 'sampling' if your client supports sampling). `{domain}` is the pack "
            "used below.",
            f"Call `generate_facts` with {{\"request\": {{\"source\": {{\"kind\": \"pack\", \"domains\": "
            f"[\"{domain}\"]}}, \"models\": [\"{model}\"]}}}}. Check `n_facts`, `validation` (every fact must be "
            "usable for the model: `n_ok` = `n_facts`) and `dropped`. Keep its `run_id` as DATASET.",
            f"Call `trace` with {{\"request\": {{\"model\": \"{model}\", \"dataset_run_id\": DATASET}}}} "
            "(read the tool's input schema for corruption, noise samples, window and kinds). It returns the peak "
            "(kind, layer, position), per-fact p(target) clean / corrupted / restored, and which facts the model "
            "actually knows. Keep its `run_id` as TRACE.",
            "Call `plot` with {\"request\": {\"run_id\": TRACE}} to draw every trace figure (or pass `kind`, "
            "e.g. one of the kinds listed in `available_kinds`, to draw one). Look at the layer x position "
            "heatmaps per kind and the restoration-by-layer curves.",
            "Repeat `trace` on a second model or on held-out facts, then call `compare` with the two trace run "
            "ids to see the curves side by side with a plain-language interpretation.",
        ],
        [
            "Only facts the model knows (clean prediction correct) count: unknown facts are flagged in the trace "
            "result, not averaged in. If most facts are unknown, the model does not hold this domain - say so.",
            "p(target) corrupted must be well below clean, otherwise the corruption did nothing and the trace "
            "is uninformative (raise the noise scale or use subject swap).",
            "An MLP peak at the last subject token in early-to-middle layers is the ROME signature of storage; "
            "attention peaks at the final position in later layers show the answer being moved to the output.",
            "Residual-stream restoration near 1.0 at the last layer of the final position is expected (that is "
            "the clean run); the informative part is where the effect first appears.",
            "Report the peak (kind, layer, position), its indirect effect, and how many facts it rests on.",
        ])


def register(server) -> None:
    @server.prompt(name="locate_fact", title="Locate stored facts",
                   description="Protocol: build a fact set, causal-trace it, plot and compare - where does "
                               "the model store these facts?")
    async def locate_fact(model: str = "fact-gpt2", domain: str = "geography") -> str:
        return text(model, domain) + await missing_tools_note(server, TOOLS)
