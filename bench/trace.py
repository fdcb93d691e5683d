"""Causal-tracing speed: neurotrace's exact grid vs three peers, same process, same inputs, interleaved.

The grid is ROME's: 3 kinds (resid, mlp, attn; window 10) x every layer x every position x 10 noise
samples (3 x the subject's embedding std), per fact. Peers:

* ``rome``: ROME's per-cell loop (``neurotrace.testing.reference``): one forward per cell of a batch
  [clean, noisy x samples], full logits;
* ``tl``: TransformerLens patching on the bridge: one ``run_with_hooks`` per cell (noise at
  ``hook_embed``, the clean activations written at the cell's ``hook_*`` sites, windows included);
* ``full``: the plain batched full-forward grid (``exact_grid(..., force_full=True)``);
* ``approx``: attribution patching (one forward + one backward), with its agreement to exact
  (Spearman rank correlation and top-10 overlap of the indirect effects, per kind).

``rome`` and ``tl`` are timed on ``--reference-cells`` cells spread over the grid and extrapolated to
the whole grid (said in the output). Models: ``gpt2-small`` (GPT-2-small shape, random weights, the
real tokenizer from ../shared/models/gpt2-tokenizer when present) and the catalog models
``smollm2-135m-instruct`` and ``gemma-3-270m`` when installed (``neurotrace models fetch NAME``).

    python bench/trace.py --model smollm2-135m-instruct --facts 5
    python bench/trace.py --model smollm2-135m-instruct --facts 1 --samples 3 --threads 1   # a loaded machine
    python bench/trace.py --model gemma-3-270m --facts 1 --peers full,approx
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

from neurotrace.lab.errors import InputError  # noqa: E402
from neurotrace.lab.facts.fact import Fact  # noqa: E402
from neurotrace.lab.lab import available_cores, use_threads  # noqa: E402
from neurotrace.lab.model.weights import catalog  # noqa: E402
from neurotrace.lab.model.weights.loading import ModelRef, load  # noqa: E402
from neurotrace.lab.progress import Reporter  # noqa: E402
from neurotrace.lab.tracing.forwards import sites_for  # noqa: E402
from neurotrace.lab.tracing.grids.grid import Corrupted, approx_grid, corrupted_probs, exact_grid  # noqa: E402
from neurotrace.lab.tracing.noise import subject_noise_std  # noqa: E402
from neurotrace.lab.tracing.prepare import prepare_fact  # noqa: E402
from neurotrace.testing.reference import reference_cells  # noqa: E402

TOKENIZER = ROOT.parent / "shared" / "models" / "gpt2-tokenizer"
FACTS = [Fact(id="eiffel", template="{} is located in the city of", clean_subject="The Eiffel Tower", target="Paris"),
         Fact(id="needle", template="{} is located in the city of", clean_subject="The Space Needle", target="Seattle"),
         Fact(id="colosseum", template="{} is located in the city of", clean_subject="The Colosseum", target="Rome"),
         Fact(id="bigben", template="{} is located in the city of", clean_subject="Big Ben", target="London"),
         Fact(id="louvre", template="{} is a museum in the city of", clean_subject="The Louvre", target="Paris")]
KINDS = ["resid", "mlp", "attn"]
TINY_FACT = Fact(id="tiny", template="the capital city of {} is known for its", clean_subject="france", target="paris")


def gpt2_small(out: Path) -> Path:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from neurotrace.testing.tiny import tiny_tokenizer

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).eval().save_pretrained(out)
    if TOKENIZER.is_dir():
        AutoTokenizer.from_pretrained(TOKENIZER).save_pretrained(out)
    else:
        print("note: ../shared/models/gpt2-tokenizer absent; a word-level tokenizer (vocab stays 50257)")
        words = " ".join(f.prompt() + " " + f.target for f in FACTS).lower().split()
        tiny_tokenizer("causal", sorted(set(words))).save_pretrained(out)
    return out


def tl_cells(bridge, prep, corr, cells, window, n_layers) -> list[float]:
    """One TransformerLens run_with_hooks per cell: noise at hook_embed, clean values at the cell's sites."""
    _, cache = bridge.run_with_cache(prep.ids[None])
    ids = corr.ids[None].expand(corr.samples, -1)

    def noise(act, hook):
        act = act.clone()
        act[:, corr.subject[0]:corr.subject[1]] += corr.noise.to(act.dtype)
        return act

    out = []
    for kind, layer, pos in cells:
        def restore(act, hook, pos=pos):
            act = act.clone()
            act[:, pos] = cache[hook.name][0, pos]
            return act

        hooks = [("hook_embed", noise)] + [(s, restore) for s in sites_for(kind, layer, window, n_layers)]
        with torch.no_grad():
            logits = bridge.run_with_hooks(ids, fwd_hooks=hooks)
        out.append(float(torch.softmax(logits[:, prep.predict_pos].float(), -1)[:, prep.target_id].mean()))
    return out


class Work:
    """Multiply-accumulates a run spends in the decoder layers and the LM head, counted from the shapes
    each block and the unembedding receive (per token through a layer: its weights; per scored row: vocab
    x d_model; attention scores are ignored, a few percent at these lengths). The ratio of two peers' work
    is the speed-up a perfect implementation of the cheaper one could reach: the ceiling."""

    def __init__(self, lm) -> None:
        self.blocks = list(lm.adapter.module(lm.model, lm.adapter.blocks))
        self.head = lm.adapter.module(lm.model, lm.adapter.unembed)
        self.per_token = sum(m.weight.numel() for m in self.blocks[0].modules()          # Linear and GPT-2's Conv1D
                             if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() == 2)
        self.per_row = self.head.weight.numel()
        self.d_model = lm.d_model
        self.macs: dict[str, float] = {}

    def run(self, name: str, fn, *args, scale: float = 1.0, **kwargs):
        count = [0, 0]

        def block(_module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            count[0] += h.numel() // h.shape[-1]

        def head(_module, args):
            count[1] += args[0].numel() // args[0].shape[-1]

        handles = [b.register_forward_pre_hook(block, with_kwargs=True) for b in self.blocks]
        handles.append(self.head.register_forward_pre_hook(head))
        try:
            return fn(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
            self.macs[name] = self.macs.get(name, 0.0) + scale * (count[0] * self.per_token + count[1] * self.per_row)


class Clock:
    """Wall and process CPU seconds per name (CPU time is the fairer figure on a shared, loaded machine)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.work: Work | None = None

    def run(self, name: str, fn, *args, scale: float = 1.0, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        out = self.work.run(name, fn, *args, scale=scale, **kwargs) if self.work else fn(*args, **kwargs)
        self.wall[name] = self.wall.get(name, 0.0) + (time.perf_counter() - w) * scale
        self.cpu[name] = self.cpu.get(name, 0.0) + (time.process_time() - c) * scale
        return out


def rank_agreement(exact: torch.Tensor, approx: torch.Tensor, k: int = 10) -> tuple[float, float]:
    """Spearman correlation and top-k overlap (fraction) of two effect maps."""
    a, b = exact.flatten().double(), approx.flatten().double()
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    rho = float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])
    k = min(k, len(a))
    return rho, len(set(a.topk(k).indices.tolist()) & set(b.topk(k).indices.tolist())) / k


def main() -> None:  # noqa: C901 - a linear script
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gpt2-small",
                        help=f"gpt2-small, a catalog model ({', '.join(catalog.CATALOG)}) or a model directory")
    parser.add_argument("--facts", type=int, default=5)
    parser.add_argument("--peers", default="rome,tl,full,approx")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="default: every available core")
    parser.add_argument("--reference-cells", type=int, default=12, help="cells timed for rome/tl per fact")
    args = parser.parse_args()
    threads = use_threads(args.threads)
    peers = set(args.peers.split(","))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_avg = [f"{x:.1f}" for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "gpt2-small":
            path = gpt2_small(Path(tmp) / "gpt2-small")
        elif Path(args.model).is_dir():
            path = Path(args.model)
        elif args.model in catalog.CATALOG and catalog.is_installed(args.model):
            path = catalog.converted(args.model)
        else:
            sys.exit(f"{args.model} is not installed: neurotrace models fetch {args.model}")
        lm = load(ModelRef(model=str(path)))
        bridge = None
        if "tl" in peers:
            try:
                bridge = load(ModelRef(model=str(path), backend="bridge")).bridge
            except Exception as exc:  # noqa: BLE001 - a bench reports why a peer is missing
                print(f"tl peer unavailable: {type(exc).__name__}: {str(exc)[:200]}")
        print(f"model {args.model} ({lm.adapter.family}, {lm.n_layers} layers, d_model {lm.d_model}); "
              f"{args.facts} facts; {len(KINDS)} kinds x {lm.n_layers} layers x every position x {args.samples} "
              f"samples, window {args.window}; threads {threads} of {available_cores()} cores; "
              f"load {' '.join(load_avg)} at start")
        clock = Clock()
        clock.work = Work(lm)
        n_ref = {"rome": 0, "tl": 0}  # cells timed per peer
        d = {"full": 0.0, "rome": 0.0, "tl": 0.0}
        rows_total, cells_total, agree = 0, 0, {k: [] for k in KINDS}
        for i, fact in enumerate(FACTS[: args.facts]):
            try:
                prep = prepare_fact(lm, fact, i)
            except InputError:   # a word-level tiny model (smoke runs): its own vocabulary
                fact, prep = TINY_FACT, prepare_fact(lm, TINY_FACT, i)
            g = torch.Generator().manual_seed(i)
            noise = torch.randn((args.samples, prep.subject[1] - prep.subject[0], lm.d_model), generator=g)
            corr = Corrupted(prep.ids, noise * 3 * subject_noise_std(lm, [prep]), prep.subject)
            cells = [(k, layer, p) for k in KINDS for layer in range(lm.n_layers) for p in range(len(prep.ids))]
            cells_total += len(cells)
            rows_total += len(cells) * args.samples
            sample = cells[:: max(1, len(cells) // args.reference_cells)][: args.reference_cells]
            ours = clock.run("ours", exact_grid, lm, prep, corr, KINDS, args.window, Reporter())
            if "full" in peers:
                full = clock.run("full", exact_grid, lm, prep, corr, KINDS, args.window, Reporter(), force_full=True)
                d["full"] = max(d["full"], max(float((ours[k] - full[k]).abs().max()) for k in KINDS))
            for peer in ("rome", "tl"):
                if peer not in peers or (peer == "tl" and bridge is None):
                    continue
                scale = len(cells) / len(sample)
                vals = (clock.run(peer, reference_cells, lm, prep, corr, sample, args.window, scale=scale)
                        if peer == "rome" else
                        clock.run(peer, tl_cells, bridge, prep, corr, sample, args.window, lm.n_layers, scale=scale))
                n_ref[peer] += len(sample)
                d[peer] = max(d[peer], max(abs(float(ours[k][layer, p]) - v) for (k, layer, p), v in zip(sample, vals, strict=True)))
            if "approx" in peers:
                est = clock.run("approx", approx_grid, lm, prep, corr, KINDS, args.window)
                base = float(corrupted_probs(lm, prep, corr).mean())
                for k in KINDS:
                    agree[k].append(rank_agreement(ours[k] - base, est[k]))
            print(f"  fact {fact.id}: {len(prep.ids)} tokens, p_clean-ish max resid {float(ours['resid'].max()):.3f}, "
                  f"ours {clock.wall['ours']:.1f} s so far", flush=True)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        w, c = clock.wall, clock.cpu
        print(f"neurotrace exact grid : {w['ours']:8.1f} s wall {c['ours']:8.1f} s CPU  {rows_total / w['ours']:8.1f} rows/s "
              f"({cells_total} cells x {args.samples} samples)  peak RSS {rss:.2f} GiB  "
              f"{clock.work.macs['ours'] / w['ours'] / 5e8:.1f} GFLOP/s in layers + LM head")
        names = {"rome": "ROME per-cell loop", "tl": "TransformerLens hooks", "full": "batched full forward"}
        for peer, label in names.items():
            if peer in w:
                note = f"; timed on {n_ref[peer]} cells, extrapolated" if peer in n_ref else ""
                macs = clock.work.macs
                print(f"{label:22s}: {w[peer]:8.1f} s wall {c[peer]:8.1f} s CPU  {rows_total / w[peer]:8.1f} rows/s  "
                      f"ratio {w[peer] / w['ours']:5.2f}x wall {c[peer] / c['ours']:5.2f}x CPU  max |delta| {d[peer]:.1e}"
                      f"  work {macs[peer] / macs['ours']:5.2f}x ours (the ceiling){note}")
        if "approx" in w:
            print(f"attribution patching  : {w['approx']:8.1f} s wall {c['approx']:8.1f} s CPU  "
                  f"{w['ours'] / w['approx']:.1f}x faster than exact (wall), {c['ours'] / c['approx']:.1f}x (CPU)")
            for k in KINDS:
                rho = sum(a for a, _ in agree[k]) / len(agree[k])
                top = sum(b for _, b in agree[k]) / len(agree[k])
                print(f"  {k:5s} agreement with exact: Spearman {rho:.2f}, top-10 overlap {top:.2f} (mean over facts)")
        print(f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())} at end (1, 5, 15 min)")


if __name__ == "__main__":
    main()
