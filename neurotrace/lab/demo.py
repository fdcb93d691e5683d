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

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.progress import Reporter, stderr_progress


@dataclass
class Step:
    title: str
    result: Any


def _steps(quick: bool) -> list[tuple[str, Callable[[Lab, Reporter, dict], Any]]]:
    from neurotrace.lab import demo_steps as s

    return [
        ("Load the default model", s.load_default),
        ("Build a validated fact dataset (cybersecurity pack)", s.make_dataset),
        ("Causal tracing: fact-gpt2 vs fact-gpt2-cyber on the cybersecurity facts", s.trace_causal),
        ("Compare the two causal traces", s.compare_causal),
        ("Mask / context patching: fact-bert vs fact-bert-cyber", s.trace_masked),
        ("Neuron clamp sweep during generation (collapse rescue)", s.clamp),
        ("Capture residual states over the fact prompts", s.capture),
        ("Fit a sparse autoencoder on them", s.fit_sae),
        ("Ablate the top SAE feature and compare with baseline", s.intervene),
        ("Attribution benchmark against known ground truth", s.benchmark),
    ]


def run_demo(runs_dir: str | None = None, quick: bool = False) -> int:
    """Run every step, write the demo run (summary.md + steps.json) and print the summary."""
    lab = Lab(LabSettings.from_env(runs_dir=runs_dir and Path(runs_dir)))
    reporter = Reporter(on_progress=stderr_progress("    "))
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
        run.write_json("steps.json", [{"title": s.title, "run_id": getattr(s.result, "run_id", None),
                                       "summary": getattr(s.result, "summary", "")} for s in done])
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
