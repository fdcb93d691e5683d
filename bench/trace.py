"""Causal-tracing speed: neurotrace's exact grid vs ROME's per-cell loop, same process, same inputs.

GPT-2-small shape (GPT2Config(): 12 layers, d_model 768) with random weights, the real GPT-2 tokenizer
from ../shared/models/gpt2-tokenizer when present, a ~10-token prompt, 3 kinds (resid, mlp, attn;
window 10) x 12 layers x every position x 10 noise samples. The reference is ROME's algorithm: one
forward per (kind, layer, position) of a batch [clean, noisy x samples], full logits, restore
h[1:, pos] = h[0, pos]. Prints wall time, forwards/s, peak memory (RSS), max |diff| (absolute and relative) and the speed ratio.

    python bench/trace.py                 # reference timed on a subset of cells, extrapolated
    python bench/trace.py --full-reference
"""

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.model.loading import ModelRef, load
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.grid import Corrupted, exact_grid
from neurotrace.lab.tracing.prepare import prepare_fact, subject_noise_std
from neurotrace.testing.reference import reference_cells  # noqa: E402

TOKENIZER = ROOT.parent / "shared" / "models" / "gpt2-tokenizer"
FACT = Fact(template="{} is located in the city of", clean_subject="The Space Needle", target="Seattle")


def build_model(out: Path) -> Path:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    model.save_pretrained(out)
    if TOKENIZER.is_dir():
        AutoTokenizer.from_pretrained(TOKENIZER).save_pretrained(out)
    else:
        from neurotrace.testing.tiny import tiny_tokenizer

        print("note: ../shared/models/gpt2-tokenizer absent; using a word-level tokenizer (vocab stays 50257)")
        tiny_tokenizer("causal", "the space needle is located in city of seattle".split()).save_pretrained(out)
    return out


def reference(lm, prep, corr, kinds, window, cells=None):
    """ROME's per-cell loop; returns ({(kind, layer, pos): p}, forwards)."""
    todo = cells or [(k, layer, p) for k in kinds for layer in range(lm.n_layers) for p in range(len(prep.ids))]
    return dict(zip(todo, reference_cells(lm, prep, corr, todo, window), strict=True)), len(todo)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference-cells", type=int, default=36, help="cells timed for the reference")
    parser.add_argument("--full-reference", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        lm = load(ModelRef(model=str(build_model(Path(tmp) / "gpt2-small"))))
        prep = prepare_fact(lm, FACT, 0)
        g = torch.Generator().manual_seed(0)
        n_subj = prep.subject[1] - prep.subject[0]
        noise = torch.randn((args.samples, n_subj, lm.d_model), generator=g) * 3 * subject_noise_std(lm, [prep])
        corr = Corrupted(prep.ids, noise, prep.subject)
        kinds = ["resid", "mlp", "attn"]
        n_cells = len(kinds) * lm.n_layers * len(prep.ids)
        print(f"model: GPT-2 small shape ({lm.n_layers} layers, d_model {lm.d_model}); prompt {len(prep.ids)} tokens "
              f"{prep.tokens}; grid {len(kinds)} kinds x {lm.n_layers} layers x {len(prep.ids)} positions = "
              f"{n_cells} cells x {args.samples} samples; window {args.window}; threads {args.threads}")
        if args.full_reference:
            cells = None
        else:
            every = max(1, n_cells // args.reference_cells)
            all_cells = [(k, layer, p) for k in kinds for layer in range(lm.n_layers) for p in range(len(prep.ids))]
            cells = all_cells[::every][: args.reference_cells]
        # interleaved (ours, reference half, ours, reference half) so a busy machine hurts both alike
        t_ours, ref, t_ref_raw, forwards = [], {}, 0.0, 0
        halves = [None] if cells is None else [cells[::2], cells[1::2]]
        for half in halves:
            t0 = time.perf_counter()
            ours = exact_grid(lm, prep, corr, kinds, args.window, Reporter())
            t_ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            part, n = reference(lm, prep, corr, kinds, args.window, half)
            t_ref_raw += time.perf_counter() - t0
            ref.update(part)
            forwards += n
        t_ours = min(t_ours)
        t_ref = t_ref_raw * (n_cells / forwards)
        rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        diff = max(abs(ours[k][layer, p].item() - v) for (k, layer, p), v in ref.items())
        rel = max(abs(ours[k][layer, p].item() - v) / abs(v) for (k, layer, p), v in ref.items())  # p(target) is small
        rows = n_cells * args.samples
        print(f"neurotrace exact grid : {t_ours:8.2f} s (best of {len(halves)})  {rows / t_ours:8.1f} patched runs/s  (peak RSS {rss_gib:.2f} GiB)")
        print(f"ROME per-cell loop    : {t_ref:8.2f} s  {n_cells / t_ref:8.1f} forwards/s ({n_cells} forwards of batch "
              f"{args.samples + 1}){'' if cells is None else f'; timed on {forwards} cells and extrapolated'}")
        print(f"speed-up: {t_ref / t_ours:.2f}x   max |diff| on compared cells: {diff:.2e} "
              f"(relative {rel:.1e}; random weights put p(target) near 1/vocab)")


if __name__ == "__main__":
    main()
