"""Benchmark: clamp_sweep (batched, KV-cached) vs a straightforward per-(prompt, value) generate loop.

A BCR-scale grid on a GPT-2-small-shaped model built from ``GPT2Config()`` (random weights; speed does
not depend on them): the paper's 14 settings (13 clamp values + baseline) of neuron 11:373, 50 new
tokens, greedy. Prints tokens/s, the projected time of the full 140-prompt grid, the speed-up over a
loop that calls ``model.generate`` once per (prompt, value) with a clamp hook (run on a subset in the
same process), and whether the greedy outputs are identical token for token.

    python bench/clamp_sweep.py [--prompts 16] [--loop-prompts 2] [--threads 1] [--batch-size 128]
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from neurotrace import ClampSweepRequest, run_clamp_sweep
from neurotrace.lab.clamping.generation import reference_generate
from neurotrace.lab.clamping.sweep import PAPER_SWEEP
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.loading import ModelRef
from neurotrace.lab.progress import Reporter

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


def build_model(out: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)  # model init uses the global RNG; this is a script
    GPT2LMHeadModel(GPT2Config()).eval().save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        if (TOKENIZER / name).is_file():
            shutil.copy(TOKENIZER / name, out / name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16, help="prompts in the batched sweep (grid has 140)")
    ap.add_argument("--loop-prompts", type=int, default=2, help="prompts run through the straightforward loop")
    ap.add_argument("--tokens", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 2 helps only on an otherwise idle 2-core machine")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    if not (TOKENIZER / "tokenizer.json").is_file():
        raise SystemExit(f"needs the GPT-2 tokenizer at {TOKENIZER}")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "gpt2-small-random")
        lab = Lab(LabSettings(runs_dir=Path(tmp) / "runs"))
        prompts = grid(args.prompts)
        request = ClampSweepRequest(model=str(model_dir), neurons=["11:373"], prompts=prompts,
                                    max_new_tokens=args.tokens, batch_size=args.batch_size)
        lab.cache.get(ModelRef(model=str(model_dir)))                     # load outside the timing
        t0 = time.perf_counter()
        result = run_clamp_sweep(request, lab=lab, reporter=Reporter())
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in
                lab.store.artifact_path(result.run_id, "tables/generations.jsonl").read_text("utf-8").splitlines()]
        lm = lab.cache.get(ModelRef(model=str(model_dir)))
        loop_s, loop_tokens, mismatches, compared = 0.0, 0, 0, 0
        for item in loop_subset(prompts, lm.tokenizer, args.loop_prompts):
            ids = lm.tokenizer(item["prompt"]).input_ids
            for value in PAPER_SWEEP:
                t = time.perf_counter()
                ref = reference_generate(lm.model, lm.adapter, ids, max_new_tokens=args.tokens,
                                         neurons=None if value is None else {11: [373]}, value=value,
                                         eos_token_id=lm.tokenizer.eos_token_id,
                                         pad_token_id=lm.tokenizer.eos_token_id)
                loop_s += time.perf_counter() - t
                loop_tokens += len(ref)
                sweep = "baseline" if value is None else f"{float(value):g}"
                mine = next(r["tokens"] for r in rows if r["prompt"] == item["prompt"] and r["sweep"] == sweep)
                compared += 1
                mismatches += mine != ref
    n = len(prompts)
    batched_tps = result.tokens_generated / wall
    loop_tps = loop_tokens / loop_s
    print(f"model: GPT-2-small shape (GPT2Config(), random init), {torch.get_num_threads()} threads, "
          f"batch_size {args.batch_size}")
    print(f"grid: {n} prompts x {len(PAPER_SWEEP)} settings x {args.tokens} tokens = {result.n_rows} generations")
    print(f"batched clamp_sweep: {wall:.1f} s wall (generation {result.seconds:.1f} s), "
          f"{result.tokens_generated} tokens, {batched_tps:.1f} tokens/s")
    print(f"projected full 140-prompt grid: {wall * 140 / n / 60:.1f} min")
    print(f"straightforward loop ({args.loop_prompts} prompt(s) x {len(PAPER_SWEEP)} generate calls): "
          f"{loop_s:.1f} s, {loop_tokens} tokens, {loop_tps:.1f} tokens/s; "
          f"projected 140 prompts: {loop_s / max(args.loop_prompts, 1) * 140 / 60:.1f} min")
    print(f"speed-up: {batched_tps / loop_tps:.1f}x")
    print(f"greedy outputs identical: {compared - mismatches}/{compared}")


if __name__ == "__main__":
    main()
