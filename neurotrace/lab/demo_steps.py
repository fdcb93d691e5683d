"""The demo's steps, each one ordinary experiment call (see :mod:`neurotrace.lab.demo`).

Each function takes (lab, reporter, state) and returns the experiment's result; ``state`` carries
run ids between steps and ``state['quick']`` shrinks the work.
"""

from typing import Any

from neurotrace.lab.lab import Lab
from neurotrace.lab.progress import Reporter

CAUSAL = ["fact-gpt2", "fact-gpt2-cyber"]
MASKED = ["fact-bert", "fact-bert-cyber"]


def load_default(lab: Lab, reporter: Reporter, state: dict) -> Any:
    from neurotrace.lab.embedded import DEFAULT_MODEL
    from neurotrace.lab.models import ModelRef
    from neurotrace.lab.modeltools import run_load_model

    return run_load_model(ModelRef(model=DEFAULT_MODEL), lab=lab, reporter=reporter)


def make_dataset(lab: Lab, reporter: Reporter, state: dict) -> Any:
    from neurotrace.lab.facts import GenerateFactsRequest, run_generate_facts

    req = GenerateFactsRequest.model_validate({"source": {"kind": "pack", "domains": ["cybersecurity"]},
                                               "models": CAUSAL + MASKED})
    result = run_generate_facts(req, lab=lab, reporter=reporter)
    state["dataset"] = result.run_id
    return result


def _fact_prompts(state: dict, n: int) -> list[str]:
    from neurotrace.lab.embedded import embedded_model_path
    from neurotrace.lab.factworld_eval import load_facts

    facts = [f for f in load_facts(embedded_model_path("fact-gpt2")) if not f.held_out]
    step = max(1, len(facts) // n)
    return [f.prompt() for f in facts[::step][:n]]


def trace_causal(lab: Lab, reporter: Reporter, state: dict) -> Any:
    from neurotrace.lab.tracing import TraceRequest, run_trace

    req = TraceRequest.model_validate({"models": CAUSAL, "dataset_run_id": state["dataset"],
                                       "max_facts": 3 if state["quick"] else 6,
                                       "corruption": {"kind": "noise", "samples": 3 if state["quick"] else 5}})
    result = run_trace(req, lab=lab, reporter=reporter)
    state["trace_causal"] = result.run_id
    return result


def compare_causal(lab: Lab, reporter: Reporter, state: dict) -> Any:
    from neurotrace.lab.compare import CompareRequest, run_compare

    return run_compare(CompareRequest(run_ids=[state["trace_causal"]]), lab=lab, reporter=reporter)


def trace_masked(lab: Lab, reporter: Reporter, state: dict) -> Any:
    from neurotrace.lab.tracing import TraceRequest, run_trace

    req = TraceRequest.model_validate({"models": MASKED, "dataset_run_id": state["dataset"],
                                       "max_facts": 3 if state["quick"] else 12, "corruption": {"kind": "swap"}})
    return run_trace(req, lab=lab, reporter=reporter)


def clamp(lab: Lab, reporter: Reporter, state: dict) -> Any:
    from neurotrace.lab.clamping import ClampSweepRequest, run_clamp_sweep

    quick = state["quick"]
    req = ClampSweepRequest(model="fact-gpt2", neurons=["5:0"], prompts=_fact_prompts(state, 4 if quick else 16),
                            values=[-10, 0, None, 10] if quick else None, max_new_tokens=12 if quick else 30,
                            stop_at_eos=False)
    return run_clamp_sweep(req, lab=lab, reporter=reporter)


def capture(lab: Lab, reporter: Reporter, state: dict) -> Any:
    from neurotrace.lab.capture import CaptureRequest, run_capture

    req = CaptureRequest(model="fact-gpt2", sites=["blocks.3.hook_resid_post"],
                         prompts=_fact_prompts(state, 40 if state["quick"] else 200), positions="all")
    result = run_capture(req, lab=lab, reporter=reporter)
    state["capture"] = result.run_id
    return result


def fit_sae(lab: Lab, reporter: Reporter, state: dict) -> Any:
    from neurotrace.lab.sae import FitSAERequest, run_fit_sae

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
    from neurotrace.lab.embedded import embedded_model_path
    from neurotrace.lab.factworld_eval import load_facts
    from neurotrace.lab.intervene import InterveneRequest, run_intervene

    facts = [f for f in load_facts(embedded_model_path("fact-gpt2")) if not f.held_out][:3]
    prompts = [{"prompt": f.prompt(), "target": f.target} for f in facts]
    features = _busiest_features(lab, state["sae"], 8)
    req = InterveneRequest.model_validate({"sae_run": state["sae"], "prompts": prompts, "max_new_tokens": 4,
                                           "policies": [{"kind": "ablate_features", "features": features}],
                                           "rank_features": 8})
    return run_intervene(req, lab=lab, reporter=reporter)


def benchmark(lab: Lab, reporter: Reporter, state: dict) -> Any:
    from neurotrace.lab.benchmark import BenchmarkRequest, run_benchmark

    req = BenchmarkRequest.model_validate({"seeds": 4 if state["quick"] else 16})
    return run_benchmark(req, lab=lab, reporter=reporter)
