"""Benchmark: capture and intervene generation on the KV cache vs full recomputation, same process.

Each tool generates ``--tokens`` new tokens for one prompt under edits that act at every step (so the
cache is exact): capture records three sites, intervene runs its baseline, intervened and
teacher-forced passes (controls and feature ranking off). The two paths run interleaved, alternating
which goes first, ``--repeats`` times; the figures are the medians. The model is
``smollm2-135m-instruct`` (the catalog GGUF, when installed) or ``gpt2-small`` (GPT-2-small shape from
``GPT2Config()``, random weights, the real GPT-2 tokenizer). Prints seconds per path, the ratio, the
generated tokens, whether they agree, the largest relative difference of the captured states, the
torch thread count and the load average.

    python bench/generation.py [--model smollm2-135m-instruct] [--tokens 64] [--repeats 2]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from neurotrace import CaptureRequest, InterveneRequest, run_capture, run_intervene
from neurotrace.lab.capture import force_recompute, load_trace_dataset
from neurotrace.lab.lab import Lab, LabSettings, available_cores, use_threads
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.testing.tiny import build_gpt2_small

TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "models" / "gpt2-tokenizer"
PROMPT = "The history of the Roman Empire begins with"
SITES = ["blocks.0.hook_resid_post", "blocks.3.mlp.hook_post", "blocks.5.hook_resid_post"]
EDITS = [{"kind": "set_neurons", "neurons": ["2:11", "4:373"], "value": 3.0},
         {"kind": "zero_heads", "layer": 1, "heads": [0, 3], "positions": [-1]}]


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])


def timed(fn, recompute: bool):
    t = time.perf_counter()
    if recompute:
        with force_recompute():
            out = fn()
    else:
        out = fn()
    return time.perf_counter() - t, out


def capture_once(lab: Lab, model: str, tokens: int):
    request = CaptureRequest(model=model, sites=SITES, prompts=[PROMPT], max_new_tokens=tokens, stop_at_eos=False,
                             interventions=EDITS)
    result = run_capture(request, lab=lab, reporter=NULL_REPORTER)
    line = json.loads(lab.store.artifact_path(result.run_id, "trace.jsonl").read_text(encoding="utf-8"))
    states = {s: np.array(load_trace_dataset(lab, result.run_id, s).states) for s in SITES}
    return line["generated_ids"], states, lab.store.read_json(result.run_id, "capture.json")["generation"]["path"]


def intervene_once(lab: Lab, model: str, tokens: int):
    request = InterveneRequest(model=model, prompts=[PROMPT], policies=EDITS, max_new_tokens=tokens, controls=0,
                               rank_features=0)
    report = lab.store.read_json(run_intervene(request, lab=lab, reporter=NULL_REPORTER).run_id, "report.json")
    entry = report["prompts"][0]
    steps = {"p": np.array([[s["p_token_baseline"], s["p_token_intervened"]] for s in entry["per_step"]])}
    return entry["intervened"]["tokens"], steps, report["generation"]["path"]


def max_rel(a: dict, b: dict) -> float:
    return max(float((np.abs(a[k] - b[k]) / np.abs(b[k]).max(axis=-1, keepdims=True).clip(1e-12)).max()) for k in b)


def compare(name: str, fn, repeats: int) -> None:
    seconds = {False: [], True: []}
    outs = {}
    for r in range(repeats):
        for recompute in ((False, True) if r % 2 == 0 else (True, False)):
            s, outs[recompute] = timed(fn, recompute)
            seconds[recompute].append(s)
    (tok_c, arr_c, path_c), (tok_r, arr_r, path_r) = outs[False], outs[True]
    cached, full = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(f"{name}: kv_cache {cached:.2f} s ({path_c}), recompute {full:.2f} s ({path_r}), "
          f"speed-up {full / cached:.2f}x; {len(tok_c)} tokens, identical: {tok_c == tok_r}, "
          f"max rel diff {max_rel(arr_c, arr_r):.1e}; load {load_avg()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", choices=["smollm2-135m-instruct", "gpt2-small"])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every available core)")
    ap.add_argument("--tools", default="capture,intervene")
    args = ap.parse_args()
    threads = use_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "gpt2-small":
            if not (TOKENIZER / "tokenizer.json").is_file():
                raise SystemExit(f"needs the GPT-2 tokenizer at {TOKENIZER}")
            model = str(build_gpt2_small(Path(tmp) / "gpt2-small-random", TOKENIZER))
        else:
            if not catalog.is_installed(args.model):
                raise SystemExit(f"{args.model} is not installed (neurotrace models fetch {args.model})")
            model = str(catalog.converted(args.model))
        lab = Lab(LabSettings(runs_dir=Path(tmp) / "runs", threads=threads))
        lm = lab.cache.get(ModelRef(model=model))                         # load outside the timing
        print(f"model: {args.model} ({lm.n_layers} layers), prompt {len(lm.tokenizer(PROMPT).input_ids)} tokens + "
              f"{args.tokens} new, threads {threads} of {available_cores()} cores, {args.repeats} repeat(s), "
              f"load {load_avg()} at start")
        if "capture" in args.tools:
            compare("capture (3 sites, 2 edits)", lambda: capture_once(lab, model, args.tokens), args.repeats)
        if "intervene" in args.tools:
            compare("intervene (2 policies; baseline + intervened + teacher-forced)",
                    lambda: intervene_once(lab, model, args.tokens), args.repeats)


if __name__ == "__main__":
    main()
