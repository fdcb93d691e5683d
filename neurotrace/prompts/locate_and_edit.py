"""Prompt: locate a fact, then edit it there (trace -> edit -> trace the edited model -> sweep the layers).

Every request example is built by :func:`request_example` from the tool's own request model."""

from neurotrace.lab.editing import EditRequest
from neurotrace.lab.plotting import PlotRequest
from neurotrace.lab.tracing import TraceRequest
from neurotrace.prompts._protocol import missing_tools_note, request_example, steps

TOOLS = ("trace", "edit", "plot")
RUNS = ("TRACE", "EDIT", "EDITED")


def text(model: str, pack: str) -> str:
    trace = request_example(TraceRequest, RUNS, models=[model], pack=pack, max_facts=6, components=["mlp"])
    edit = request_example(EditRequest, RUNS, model=model, pack=pack, max_facts=10)
    one = request_example(EditRequest, RUNS, model=model, rewrites=[
        {"template": "The {} is located in the city of", "subject": "Eiffel Tower", "target_new": "Rome",
         "target_true": "Paris", "relation": "landmark_city"}])
    retrace = request_example(TraceRequest, RUNS, models=["EDITED"], facts=[
        {"template": "The {} is located in the city of", "clean_subject": "Eiffel Tower", "target": "Rome"}],
        components=["mlp"])
    sweep = request_example(EditRequest, RUNS, model=model, pack=pack, max_facts=4, sweep_layers=True,
                            trace_run_id="TRACE")
    memit = request_example(EditRequest, RUNS, model=model, pack=pack, max_facts=10, method="memit")
    plot = request_example(PlotRequest, RUNS, run_id="EDIT")
    return steps(
        f"Locate facts in {model}, then rewrite them where they are stored",
        "ROME's causal trace finds the MLP layers at the last subject token that carry a fact; ROME then rewrites "
        "the fact with a rank-one change of that layer's output projection (key: the MLP input at the last subject "
        "token; value: optimised so the new answer wins while a KL term keeps the subject's other properties). "
        "Hase et al. (2023) found that where tracing localises does not predict where editing works best: check it.",
        [
            f"Call `trace` with {trace}. Keep its `run_id` as TRACE; `edit` takes its MLP peak at the last "
            "subject token as the default layer.",
            f"Call `edit` with {edit} (each fact gets another fact's answer of the same relation, CounterFact "
            f"style; edited one at a time at the located layer), or one fact inline: {one}. Keep `run_id` as EDIT "
            "and `edited_model` as EDITED.",
            "Read `metrics`: efficacy and generalisation (paraphrases) should be high after, specificity "
            "(neighbours keep their own answers) and unrelated facts should stay high, fluency should not drop. "
            "Each has n and a 95% band; `unknown` lists facts the model did not know and so were not edited.",
            f"Call `trace` with {retrace}: EDITED is the edited model's name, so this traces the rewritten fact "
            "where the new answer is now read from.",
            f"Call `edit` with {sweep}: every layer is edited and set beside the trace's indirect effect; read "
            "`sweep.pearson_pairs` and the figure.",
            f"For many facts at once call `edit` with {memit} (MEMIT over 5 layers ending at the located one).",
            f"Call `plot` with {plot} to redraw the metrics (and the sweep) figures.",
        ],
        [
            "Efficacy alone is not an edit: a change that also flips the neighbours (specificity falls) or breaks "
            "fluency rewrote more than the fact.",
            "Compare before and after with their bands and n; a few facts give wide bands.",
            "A localisation-vs-editing correlation near 0 (or negative) is Hase et al.'s finding, not a failure: "
            "report the best edit layer beside the located one.",
            "The edited model is a new name; the original is unchanged, so both can be traced side by side.",
        ])


def register(server) -> None:
    @server.prompt(name="locate_and_edit", title="Locate and edit facts",
                   description="Protocol: causal-trace facts, rewrite them with ROME/MEMIT at the located layer, "
                               "measure efficacy and specificity, and test whether localisation predicts editing.")
    async def locate_and_edit(model: str = "gemma-3-270m", pack: str = "known-facts") -> str:
        return text(model, pack) + await missing_tools_note(server, TOOLS)
