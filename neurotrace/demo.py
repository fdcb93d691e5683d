"""The main job: the whole protocol end to end, offline, on the embedded fact-world models.

1. load the default model (fact-gpt2) and report its shape;
2. build a validated fact dataset from the cybersecurity pack, checked against all four models;
3. trace where the facts are stored in the base model and its cybersecurity-tuned version, and
   compare them; the same for the masked LMs (mask / context patching);
4. sweep a neuron clamp during generation and look for collapsed outputs it rescues;
5. capture residual states, fit a sparse autoencoder and ablate its top feature;
6. score attribution methods on circuits with known ground truth.

Every step is an ordinary tool call that writes its own run; the demo run links them all and writes
``summary.md``. ``quick`` shrinks every step (used by the tests).
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurotrace import (
    BenchmarkRequest,
    CaptureRequest,
    ClampSweepRequest,
    CompareRequest,
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
    run_fit_sae,
    run_generate_facts,
    run_intervene,
    run_load_model,
    run_trace,
)
from neurotrace.lab.facts import load_facts
from neurotrace.lab.htmlreport import render_index
from neurotrace.lab.model.embedded import DEFAULT_MODEL, embedded_model_path
from neurotrace.lab.progress import Reporter, stderr_reporter


@dataclass
class Step:
    title: str
    result: Any


CAUSAL = ["fact-gpt2", "fact-gpt2-cyber"]
MASKED = ["fact-bert", "fact-bert-cyber"]


def load_default(lab: Lab, reporter: Reporter, state: dict) -> Any:

    return run_load_model(ModelRef(model=DEFAULT_MODEL), lab=lab, reporter=reporter)


def make_dataset(lab: Lab, reporter: Reporter, state: dict) -> Any:

    req = GenerateFactsRequest.model_validate({"source": {"kind": "pack", "domains": ["cybersecurity"]},
                                               "models": CAUSAL + MASKED})
    result = run_generate_facts(req, lab=lab, reporter=reporter)
    state["dataset"] = result.run_id
    return result


def _fact_prompts(state: dict, n: int) -> list[str]:

    facts = [f for f in load_facts(embedded_model_path("fact-gpt2")) if not f.held_out]
    step = max(1, len(facts) // n)
    return [f.prompt() for f in facts[::step][:n]]


def trace_causal(lab: Lab, reporter: Reporter, state: dict) -> Any:

    req = TraceRequest.model_validate({"models": CAUSAL, "dataset_run_id": state["dataset"],
                                       "max_facts": 3 if state["quick"] else 6,
                                       "corruption": {"kind": "noise", "samples": 3 if state["quick"] else 5}})
    result = run_trace(req, lab=lab, reporter=reporter)
    state["trace_causal"] = result.run_id
    return result


def compare_causal(lab: Lab, reporter: Reporter, state: dict) -> Any:

    return run_compare(CompareRequest(run_ids=[state["trace_causal"]]), lab=lab, reporter=reporter)


def trace_masked(lab: Lab, reporter: Reporter, state: dict) -> Any:

    req = TraceRequest.model_validate({"models": MASKED, "dataset_run_id": state["dataset"],
                                       "max_facts": 3 if state["quick"] else 12, "corruption": {"kind": "swap"}})
    return run_trace(req, lab=lab, reporter=reporter)


def clamp(lab: Lab, reporter: Reporter, state: dict) -> Any:

    quick = state["quick"]
    req = ClampSweepRequest(model="fact-gpt2", neurons=["5:0"], prompts=_fact_prompts(state, 4 if quick else 16),
                            values=[-10, 0, None, 10] if quick else None, max_new_tokens=12 if quick else 30,
                            stop_at_eos=False)
    return run_clamp_sweep(req, lab=lab, reporter=reporter)


def capture(lab: Lab, reporter: Reporter, state: dict) -> Any:

    req = CaptureRequest(model="fact-gpt2", sites=["blocks.3.hook_resid_post"],
                         prompts=_fact_prompts(state, 40 if state["quick"] else 200), positions="all")
    result = run_capture(req, lab=lab, reporter=reporter)
    state["capture"] = result.run_id
    return result


def fit_sae(lab: Lab, reporter: Reporter, state: dict) -> Any:

    req = FitSAERequest(capture_run=state["capture"], architecture="topk", expansion_factor=4, k=8,
                        n_steps=100 if state["quick"] else 1500, batch_size=128,
                        splice_steps=4 if state["quick"] else 32)
    result = run_fit_sae(req, lab=lab, reporter=reporter)
    state["sae"] = result.run_id
    return result


def _busiest_features(lab: Lab, sae_run: str, n: int) -> list[int]:
    import csv
    import io

    path = lab.store.artifact_path(sae_run, "tables/feature_density.csv")
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    rows.sort(key=lambda r: -float(r["fire_rate"]))
    return [int(r["feature"]) for r in rows[:n]]


def intervene(lab: Lab, reporter: Reporter, state: dict) -> Any:

    facts = [f for f in load_facts(embedded_model_path("fact-gpt2")) if not f.held_out][:3]
    prompts = [{"prompt": f.prompt(), "target": f.target} for f in facts]
    features = _busiest_features(lab, state["sae"], 8)
    req = InterveneRequest.model_validate({"sae_run": state["sae"], "prompts": prompts, "max_new_tokens": 4,
                                           "policies": [{"kind": "ablate_features", "features": features}],
                                           "rank_features": 8})
    return run_intervene(req, lab=lab, reporter=reporter)


def benchmark(lab: Lab, reporter: Reporter, state: dict) -> Any:

    req = BenchmarkRequest.model_validate({"seeds": 4 if state["quick"] else 16})
    return run_benchmark(req, lab=lab, reporter=reporter)


def _steps(quick: bool) -> list[tuple[str, Callable[[Lab, Reporter, dict], Any]]]:
    return [
        ("Load the default model", load_default),
        ("Build a validated fact dataset (cybersecurity pack)", make_dataset),
        ("Causal tracing: fact-gpt2 vs fact-gpt2-cyber on the cybersecurity facts", trace_causal),
        ("Compare the two causal traces", compare_causal),
        ("Mask / context patching: fact-bert vs fact-bert-cyber", trace_masked),
        ("Neuron clamp sweep during generation (collapse rescue)", clamp),
        ("Capture residual states over the fact prompts", capture),
        ("Fit a sparse autoencoder on them", fit_sae),
        ("Ablate the top SAE feature and compare with baseline", intervene),
        ("Attribution benchmark against known ground truth", benchmark),
    ]


def run_demo(runs_dir: str | None = None, quick: bool = False, quiet: bool = False) -> int:
    """Run every step, write the demo run (summary.md + steps.json) and print the summary."""
    lab = Lab(LabSettings.from_env(runs_dir=runs_dir and Path(runs_dir)))
    reporter = stderr_reporter("    ", quiet=quiet)
    state: dict[str, Any] = {"quick": quick}
    done: list[Step] = []
    with lab.store.open_run("demo", {"quick": quick}) as run:
        for i, (title, fn) in enumerate(_steps(quick), start=1):
            print(f"[{i}] {title}", file=sys.stderr, flush=True)
            result = fn(lab, reporter, state)
            done.append(Step(title, result))
            if getattr(result, "run_id", None):
                run.add_input(result.run_id)
        text = _summary(done, lab)
        run.write_text("summary.md", text)
        run.write_json("steps.json", [{"title": title, "run_id": getattr(result, "run_id", None),
                                       "summary": getattr(result, "summary", "")} for s in done])
        run.write_text("index.html", render_index("neurotrace demo", [
            {"title": s.title, "run_id": getattr(s.result, "run_id", None),
             "summary": getattr(s.result, "summary", "")} for s in done]))
        run.set_summary(f"Demo: {len(done)} steps complete; see summary.md")
    print(text)
    print(f"demo run: {run.dir}\nsummary: {run.dir / 'summary.md'}")
    return 0


def _summary(steps: list[Step], lab: Lab) -> str:
    lines = ["# neurotrace demo", "", "The protocol end to end on the embedded fact-world models. Each step is "
             "one tool call with its own run directory.", ""]
    for i, step in enumerate(steps, start=1):
        r = step.result
        lines += [f"## {i}. {step.title}", "", (getattr(r, "summary", "") or "").strip(), ""]
        run_id = getattr(r, "run_id", None)
        if run_id:
            lines += [f"Run: `{lab.store.root / run_id}`", ""]
    return "\n".join(lines)
