"""Benchmark: clamp_sweep (batched, KV-cached) vs per-(prompt, value) generate loops.

A BCR-scale grid: the paper's 14 settings (13 clamp values + baseline) of neuron 11:373, 50 new
tokens, greedy, on ``--model gpt2-small`` (GPT-2-small shape from ``GPT2Config()``, random weights,
the real GPT-2 tokenizer) or ``smollm2-135m-instruct`` (the catalog GGUF, when installed). Prints
tokens/s, the projected time of the full 140-prompt grid, and against two peers run on a subset of
prompts in the same process: a loop calling ``model.generate`` once per (prompt, value) with a clamp
hook (``loop``), and a TransformerLens bridge ``generate`` loop with the same hook (``tl``, what the
BCR scripts use). Greedy outputs are compared token for token with the ``loop`` peer.

    python bench/clamp_sweep.py [--model gpt2-small] [--prompts 16] [--loop-prompts 2] [--position last]

``--precision`` instead compares the float32 sweep with the bfloat16 one side by side in one process (issue #30):
the same grid twice, the bfloat16 run with its float32 recheck of a sample of rows included in its time; it
prints both times, the speed-up, the bfloat16 run's agreement, and the arithmetic of each run (multiply-adds of
the linear layers over every position run, the recheck's float32 rows counted apart).

    nice -n 10 python bench/clamp_sweep.py --precision --model gemma-3-270m --prompts 8 --tokens 20 --threads 1
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from neurotrace import ClampSweepRequest, run_clamp_sweep
from neurotrace.lab.clamping.generation import reference_generate
from neurotrace.lab.clamping.sweep import PAPER_SWEEP
from neurotrace.lab.lab import Lab, LabSettings, available_cores, use_threads
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import Reporter
from neurotrace.testing.tiny import build_gpt2_small

TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "models" / "gpt2-tokenizer"
CORES = ["The best way to learn a new language is", "Once upon a time, in a small village,",
         "The capital of France is", "Scientists have recently discovered that", "My favourite food is",
         "The history of the Roman Empire", "To bake bread, you first need to", "The weather today is",
         "In the year 2050, computers will", "The most important thing in life is",
         "Q: What is the boiling point of water? A:", "Write a short poem about the sea:",
         "The stock market fell sharply after", "Here is a list of prime numbers:"]
TYPES = ["", "Please continue: ", "Question: ", "Story: ", "Note: "]


def grid(n: int) -> list[dict[str, str]]:
    """Up to 140 prompts: 14 core prompts x 5 types x 2 levels (level 2 repeats the core)."""
    items = []
    for level in (1, 2):
        for t, prefix in enumerate(TYPES):
            for c, core in enumerate(CORES):
                text = prefix + (core if level == 1 else f"{core} {core}")
                items.append({"prompt": text, "core_id": f"c{c}", "type": f"t{t}", "level": str(level)})
    return items[:n]


def loop_subset(prompts: list[dict[str, str]], tokenizer, k: int) -> list[dict[str, str]]:
    """k prompts spread over the token lengths, shortest first (the most left-padded rows included)."""
    by_len = sorted(prompts, key=lambda p: len(tokenizer(p["prompt"]).input_ids))
    if k <= 1:
        return by_len[:k]
    return [by_len[round(i * (len(by_len) - 1) / (k - 1))] for i in range(k)]


def tl_loop(path: Path, prompts: list[list[int]], tokens: int, position: str) -> tuple[float, int, str]:
    """The TransformerLens peer: one bridge ``generate`` per (prompt, value) with a clamp hook."""
    try:
        from neurotrace.lab.model.weights.loading import load

        bridge = load(ModelRef(model=str(path), backend="bridge")).bridge
    except Exception as exc:  # noqa: BLE001 - a bench reports why a peer is missing
        return 0.0, 0, f"unavailable ({type(exc).__name__}: {str(exc)[:120]})"
    seconds, count = 0.0, 0
    for ids in prompts:
        for value in PAPER_SWEEP:
            def clamp(act, hook, value=value):
                if value is not None:
                    act = act.clone()
                    if position == "all" or act.shape[1] == 1:
                        act[:, :, 373] = value
                    else:
                        act[:, -1, 373] = value
                return act

            t = time.perf_counter()
            with torch.no_grad(), bridge.hooks(fwd_hooks=[("blocks.11.mlp.hook_post", clamp)]):
                out = bridge.generate(torch.tensor([ids]), max_new_tokens=tokens, do_sample=False, verbose=False)
            seconds += time.perf_counter() - t
            count += out.shape[1] - len(ids)
    return seconds, count, "ok"


def linear_params(model: torch.nn.Module) -> int:
    """Weights of every linear layer (the unembedding included): one multiply-add each per position run."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def precision_side_by_side(args: argparse.Namespace, threads: int) -> None:
    """The same grid in float32 and in bfloat16, one process, the bfloat16 run's agreement printed."""
    load_start = " ".join(f"{x:.1f}" for x in os.getloadavg())
    model_dir = catalog.converted(args.model) if args.model != "gpt2-small" else None
    if model_dir is None:
        raise SystemExit("--precision runs on a catalog model: --model gemma-3-270m or smollm2-135m-instruct")
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(LabSettings(runs_dir=Path(tmp) / "runs", threads=threads))
        lm = lab.cache.get(ModelRef(model=str(model_dir)))               # load outside the timing
        weights = linear_params(lm.model)
        runs = {}
        for precision in ("float32", "bfloat16", "float32", "bfloat16"):   # twice each, interleaved: the load moves
            request = ClampSweepRequest(model=str(model_dir), neurons=["11:373"], prompts=grid(args.prompts),
                                        max_new_tokens=args.tokens, batch_size=args.batch_size,
                                        position=args.position, controls=0, precision=precision)
            t0 = time.perf_counter()
            result = run_clamp_sweep(request, lab=lab, reporter=Reporter())
            wall = time.perf_counter() - t0
            gens = [json.loads(line) for line in lab.store.artifact_path(result.run_id, "tables/generations.jsonl")
                    .read_text("utf-8").splitlines()]
            positions = sum(len(g["prompt_ids"]) + len(g["tokens"]) for g in gens)
            best = runs.get(precision)
            if best is None or wall < best[0]:
                runs[precision] = (wall, result, positions, gens)
    (w32, r32, pos, g32), (w16, r16, _, g16) = runs["float32"], runs["bfloat16"]
    agreement = r16.precision_agreement
    if agreement is None:
        raise SystemExit(f"the bfloat16 run ran in float32 here: {r16.summary[-200:]}")
    checked = agreement.n / max(r16.n_rows, 1)
    print(f"model: {args.model}, threads {threads} of {available_cores()} cores, {args.prompts} prompts x "
          f"{r32.n_rows // max(args.prompts, 1)} settings x {args.tokens} tokens, batch_size {args.batch_size}, "
          f"position {args.position}; load {load_start} at start")
    print(f"arithmetic: {2 * weights * pos / 1e9:.1f} GFLOP per run (linear layers, {pos} positions); the bfloat16 "
          f"run adds its float32 recheck of {agreement.n}/{r16.n_rows} rows "
          f"(~{2 * weights * pos * checked / 1e9:.1f} GFLOP in float32)")
    print(f"float32:  {w32:.1f} s wall (generation {r32.seconds:.1f} s), {r32.tokens_generated / w32:.1f} tokens/s")
    print(f"bfloat16: {w16:.1f} s wall (generation {r16.seconds:.1f} s, recheck included), "
          f"{r16.tokens_generated / w16:.1f} tokens/s")
    print(f"speed-up: {w32 / w16:.2f}x wall, {r32.seconds / max(r16.seconds, 1e-9):.2f}x generation")
    print(f"agreement: {agreement.summary}")
    same = sum(a["tokens"] == b["tokens"] for a, b in zip(g32, g16, strict=True))
    print(f"every row against the full float32 sweep: {same}/{len(g32)} rows token-identical; collapsed baselines "
          f"{r32.n_collapsed_baselines} vs {r16.n_collapsed_baselines}, recovered {r32.n_recovered} vs "
          f"{r16.n_recovered}, best {[(b.neurons, b.value, b.n_improved) for b in r32.best]} vs "
          f"{[(b.neurons, b.value, b.n_improved) for b in r16.best]}")
    print(f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())} at end (1, 5, 15 min)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16, help="prompts in the batched sweep (grid has 140)")
    ap.add_argument("--loop-prompts", type=int, default=2, help="prompts run through the straightforward loop")
    ap.add_argument("--tokens", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every available core)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--model", default="gpt2-small", choices=["gpt2-small", "smollm2-135m-instruct", "gemma-3-270m"])
    ap.add_argument("--position", default="all", choices=["all", "last"])
    ap.add_argument("--peers", default="loop,tl")
    ap.add_argument("--precision", action="store_true", help="compare float32 and bfloat16 sweeps side by side")
    args = ap.parse_args()
    threads = use_threads(args.threads)
    if args.precision:
        return precision_side_by_side(args, threads)
    load_avg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "gpt2-small":
            if not (TOKENIZER / "tokenizer.json").is_file():
                raise SystemExit(f"needs the GPT-2 tokenizer at {TOKENIZER}")
            model_dir = build_gpt2_small(Path(tmp) / "gpt2-small-random", TOKENIZER)
        else:
            model_dir = catalog.converted(args.model)
        lab = Lab(LabSettings(runs_dir=Path(tmp) / "runs", threads=threads))
        prompts = grid(args.prompts)
        request = ClampSweepRequest(model=str(model_dir), neurons=["11:373"], prompts=prompts,
                                    max_new_tokens=args.tokens, batch_size=args.batch_size, position=args.position,
                                    controls=0)   # the BCR grid: the 14 settings, no random-neuron controls
        lab.cache.get(ModelRef(model=str(model_dir)))                     # load outside the timing
        t0 = time.perf_counter()
        result = run_clamp_sweep(request, lab=lab, reporter=Reporter())
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in
                lab.store.artifact_path(result.run_id, "tables/generations.jsonl").read_text("utf-8").splitlines()]
        lm = lab.cache.get(ModelRef(model=str(model_dir)))
        loop_s, loop_tokens, mismatches, compared = 0.0, 1, 0, 0
        subset = loop_subset(prompts, lm.tokenizer, args.loop_prompts) if "loop" in args.peers else []
        for item in subset:
            ids = next(r["prompt_ids"] for r in rows if r["prompt"] == item["prompt"])
            for value in PAPER_SWEEP:
                t = time.perf_counter()
                ref = reference_generate(lm.model, lm.adapter, ids, max_new_tokens=args.tokens,
                                         neurons=None if value is None else {11: [373]}, value=value,
                                         position=args.position,
                                         eos_token_id=lm.tokenizer.eos_token_id,
                                         pad_token_id=lm.tokenizer.eos_token_id)
                loop_s += time.perf_counter() - t
                loop_tokens += len(ref)
                sweep = "baseline" if value is None else f"{float(value):g}"
                mine = next(r["tokens"] for r in rows if r["prompt"] == item["prompt"] and r["sweep"] == sweep)
                compared += 1
                mismatches += mine != ref
        tl_ids = [lm.tokenizer(item["prompt"]).input_ids for item in loop_subset(prompts, lm.tokenizer, args.loop_prompts)]
        tl_s, tl_tokens, tl_note = tl_loop(model_dir, tl_ids, args.tokens, args.position) if "tl" in args.peers \
            else (0.0, 0, "not run")
    n = len(prompts)
    batched_tps = result.tokens_generated / wall
    loop_tps = loop_tokens / loop_s
    print(f"model: {args.model}{' shape (GPT2Config(), random init)' if args.model == 'gpt2-small' else ''}, "
          f"threads {threads} of {available_cores()} cores, batch_size {args.batch_size}, position {args.position}, "
          f"load {load_avg} at start")
    print(f"grid: {n} prompts x {len(PAPER_SWEEP)} settings x {args.tokens} tokens = {result.n_rows} generations")
    print(f"batched clamp_sweep: {wall:.1f} s wall (generation {result.seconds:.1f} s), "
          f"{result.tokens_generated} tokens, {batched_tps:.1f} tokens/s")
    print(f"projected full 140-prompt grid: {wall * 140 / n / 60:.1f} min")
    print(f"straightforward loop ({args.loop_prompts} prompt(s) x {len(PAPER_SWEEP)} generate calls): "
          f"{loop_s:.1f} s, {loop_tokens} tokens, {loop_tps:.1f} tokens/s; "
          f"projected 140 prompts: {loop_s / max(args.loop_prompts, 1) * 140 / 60:.1f} min")
    print(f"speed-up over the generate loop: {batched_tps / loop_tps:.1f}x")
    print(f"greedy outputs identical: {compared - mismatches}/{compared}")
    if tl_tokens:
        print(f"TransformerLens bridge generate loop: {tl_s:.1f} s, {tl_tokens} tokens, {tl_tokens / tl_s:.1f} tokens/s; "
              f"projected 140 prompts: {tl_s / max(args.loop_prompts, 1) * 140 / 60:.1f} min; "
              f"speed-up {batched_tps / (tl_tokens / tl_s):.1f}x")
    else:
        print(f"TransformerLens bridge generate loop: {tl_note}")
    print(f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())} at end (1, 5, 15 min)")


if __name__ == "__main__":
    main()
