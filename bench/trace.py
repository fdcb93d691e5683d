"""Causal-tracing speed: neurotrace's exact grid vs three peers, same process, same inputs, interleaved.

The grid is ROME's: 3 kinds (resid, mlp, attn; window 10) x every layer x every position x 10 noise
samples (3 x the subject's embedding std), per fact. Peers:

* ``rome``: ROME's per-cell loop (``neurotrace.testing.reference``): one forward per cell of a batch
  [clean, noisy x samples], full logits;
* ``tl``: TransformerLens patching on the bridge: one ``run_with_hooks`` per cell (noise at
  ``hook_embed``, the clean activations written at the cell's ``hook_*`` sites, windows included);
* ``full``: the plain batched full-forward grid (``exact_grid(..., force_full=True)``);
* ``approx``: attribution patching (one forward + one backward), with its agreement to exact
  (Spearman rank correlation and top-10 overlap of the indirect effects, per kind);
* ``bf16``: the same exact grid in bfloat16 (``precision='bfloat16'``: a bfloat16 copy of the model, norms
  and the residual stream in float32), against float32 over the whole grid: the largest |delta IE|, the
  fact peaks (per kind) that move, and the time of the float32 check the tool adds (each fact's peak
  cells and a seeded sample recomputed in float32). Each fact's clean and corrupted runs use the float32
  model (``anchor``), in its time, not its work. Its work about equals float32's; its ceiling is this CPU's
  bfloat16 / float32 matmul speed ratio (printed).

``--fig2`` runs ROME's Fig. 2 through the trace tool instead: every fact of the known-facts pack on
gemma-3-270m (``rome_compat``: window 10, 10 noise samples, unknown facts skipped), exact, bfloat16, and
copies its average-indirect-effect figure to ``--fig2-out``; ``--max-facts`` times a few facts first.

``rome`` and ``tl`` are timed on ``--reference-cells`` cells spread over the grid and extrapolated to
the whole grid (said in the output). Models: ``gpt2-small`` (GPT-2-small shape, random weights, the
real tokenizer from ../shared/models/gpt2-tokenizer when present) and the catalog models
``smollm2-135m-instruct`` and ``gemma-3-270m`` when installed (``neurotrace models fetch NAME``).

    python bench/trace.py --model smollm2-135m-instruct --facts 5
    python bench/trace.py --model smollm2-135m-instruct --facts 1 --samples 3 --threads 1   # a loaded machine
    python bench/trace.py --model gemma-3-270m --facts 1 --peers full,approx
    nice -n 10 python bench/trace.py --model gemma-3-270m --facts 2 --samples 3 --threads 1 --peers bf16
    nice -n 10 python bench/trace.py --fig2 --threads 1 --max-facts 3      # time 3 facts, extrapolate
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
from neurotrace.lab.model.runtime.precision import choose, reduced_model  # noqa: E402
from neurotrace.lab.model.weights import catalog  # noqa: E402
from neurotrace.lab.model.weights.loading import ModelRef, load  # noqa: E402
from neurotrace.lab.progress import Reporter  # noqa: E402
from neurotrace.lab.tracing.forwards import sites_for  # noqa: E402
from neurotrace.lab.tracing.grids.grid import Corrupted, approx_grid, corrupted_probs, exact_grid  # noqa: E402
from neurotrace.lab.tracing.noise import subject_noise_std  # noqa: E402
from neurotrace.lab.tracing.precision import RANDOM, eligible, peak_cells  # noqa: E402
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
        self.works: dict[str, Work] = {}     # another model's work counter for some names (bf16)

    def run(self, name: str, fn, *args, scale: float = 1.0, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        work = self.works.get(name, self.work)
        out = work.run(name, fn, *args, scale=scale, **kwargs) if work else fn(*args, **kwargs)
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


def matmul_ceiling(threads: int) -> tuple[float, float]:
    """GFLOP/s of a 512x640 @ 640x2048 matmul in float32 and in bfloat16 on this CPU (best of 5 each)."""
    use_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 640, generator=g), torch.randn(640, 2048, generator=g)
    out = []
    for x, y in ((a, b), (a.bfloat16(), b.bfloat16())):
        torch.mm(x, y)
        best = min(_timed(torch.mm, x, y) for _ in range(5))
        out.append(2 * 512 * 640 * 2048 / best / 1e9)
    return out[0], out[1]


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


@torch.no_grad()
def knows(lm, prep) -> bool:
    """Whether the model's top next token on the clean prompt is the target (trace's 'known')."""
    return int(lm.model(input_ids=prep.ids[None]).logits[0, prep.predict_pos].argmax()) == prep.target_id


def fact_peaks(ie: dict[str, torch.Tensor], predict_pos: int) -> dict[str, tuple[int, int]]:
    """Per kind, the (layer, position) of the largest indirect effect (the cells a fact's peak is read from)."""
    out = {}
    for k, g in ie.items():
        masked = g.clone()
        for p in range(g.shape[1]):
            if not eligible(k, p, predict_pos):
                masked[:, p] = float("-inf")
        out[k] = divmod(int(masked.flatten().argmax()), g.shape[1])
    return out


def fig2(args) -> None:
    """ROME's Fig. 2 on gemma-3-270m through the trace tool, exact, bfloat16 (see the module docstring)."""
    import shutil

    from neurotrace import TraceRequest, run_trace
    from neurotrace.lab.lab import Lab, LabSettings

    threads = use_threads(args.threads)
    start_load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(LabSettings(runs_dir=Path(tmp) / "runs", threads=threads))
        request = TraceRequest(models=[args.fig2_model], pack="known-facts", rome_compat=True, mode="exact",
                               corruption={"kind": "noise", "samples": args.samples}, precision=args.precision,
                               max_facts=args.max_facts)
        w, c = time.perf_counter(), time.process_time()
        result = run_trace(request, lab=lab)
        wall, cpu = time.perf_counter() - w, time.process_time() - c
        model = result.models[0]
        n = model.n_facts
        print(f"ROME Fig. 2: {args.fig2_model}, known-facts pack, {n} facts traced ({model.n_known} known), "
              f"{args.samples} samples, exact, {args.precision}, {threads} thread(s)")
        print(f"time {wall:.0f} s wall, {cpu:.0f} s CPU ({wall / max(n, 1):.1f} s per fact); "
              f"load {start_load} at start, {' '.join(f'{x:.1f}' for x in os.getloadavg())} at end")
        if model.precision_agreement:
            print(model.precision_agreement.summary)
        for note in model.notes:
            print(f"note: {note}")
        found = sorted((lab.store.run_dir(result.run_id) / "figures").glob("aie_*.png"))
        if found and args.fig2_out:
            shutil.copyfile(found[0], args.fig2_out)
            print(f"figure written to {args.fig2_out}")


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
    parser.add_argument("--fig2", action="store_true", help="run ROME's Fig. 2 through trace (see the docstring)")
    parser.add_argument("--fig2-model", default="gemma-3-270m")
    parser.add_argument("--fig2-out", default=None, help="where to copy the Fig. 2 figure (a .png path)")
    parser.add_argument("--max-facts", type=int, default=None, help="--fig2: trace only the pack's first N facts")
    parser.add_argument("--precision", default="bfloat16", choices=["float32", "bfloat16"], help="--fig2 only")
    args = parser.parse_args()
    if args.fig2:
        fig2(args)
        return
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
        lb = reduced_model(lm) if "bf16" in peers else None
        if lb is not None:
            clock.works["bf16"] = Work(lb)
        moved: list[tuple[str, float, bool]] = []   # (which, float32's own gap between the two cells, known fact)
        n_known = 0
        n_peaks = 0
        n_ref = {"rome": 0, "tl": 0}  # cells timed per peer
        d = {"full": 0.0, "rome": 0.0, "tl": 0.0, "bf16": 0.0}
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
            if lb is not None:
                g16 = clock.run("bf16", exact_grid, lb, prep, corr, KINDS, args.window, Reporter(), anchor=lm)
                p_corr = float(corrupted_probs(lm, prep, corr).mean())     # float32 for both, as trace
                ie32 = {k: v - p_corr for k, v in ours.items()}
                ie16 = {k: v - p_corr for k, v in g16.items()}
                d["bf16"] = max(d["bf16"], max(float((ie32[k] - ie16[k]).abs().max()) for k in KINDS))
                p32, p16 = fact_peaks(ie32, prep.predict_pos), fact_peaks(ie16, prep.predict_pos)
                n_peaks += len(KINDS)
                known = knows(lm, prep)          # trace skips facts the model does not know, by default
                n_known += len(KINDS) * known
                moved += [(f"{fact.id}{'' if known else ' (not known)'} {k} L{p32[k][0]}->L{p16[k][0]} (float32 "
                           f"{float(ie32[k][p32[k]]):.4f} vs {float(ie32[k][p16[k]]):.4f})",
                           float(ie32[k][p32[k]] - ie32[k][p16[k]]), known)
                          for k in KINDS if p32[k][0] != p16[k][0]]
                n_cells = len(KINDS) * lm.n_layers * len(prep.ids)
                top, rand = choose(n_cells, peak_cells(ie16, prep.predict_pos), RANDOM, i)
                clock.run("check", exact_grid, lm, prep, corr, KINDS, args.window, Reporter(), cells=top + rand)
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
        if "bf16" in w:
            f32, b16 = matmul_ceiling(threads)
            macs = clock.work.macs
            both_w, both_c = w["bf16"] + w["check"], c["bf16"] + c["check"]
            print(f"bfloat16 exact grid   : {w['bf16']:8.1f} s wall {c['bf16']:8.1f} s CPU  {rows_total / w['bf16']:8.1f} rows/s "
                  f" ratio {w['ours'] / w['bf16']:5.2f}x wall {c['ours'] / c['bf16']:5.2f}x CPU faster than float32; "
                  f"{clock.works['bf16'].macs['bf16'] / w['bf16'] / 5e8:.1f} GFLOP/s; "
                  f"work {clock.works['bf16'].macs['bf16'] / macs['ours']:4.2f}x ours")
            print(f"  with its float32 check: {both_w:8.1f} s wall {both_c:8.1f} s CPU  ratio {w['ours'] / both_w:5.2f}x wall "
                  f"{c['ours'] / both_c:5.2f}x CPU (check {w['check']:.1f} s wall)")
            apart = [m for m, gap, _ in moved if gap > d["bf16"]]   # float32 separates them by more than the bound
            print(f"  largest |delta IE| over every cell {d['bf16']:.4f}; fact peaks moved {len(moved)}/{n_peaks}"
                  + (f" ({'; '.join(m for m, _, _ in moved[:6])})" if moved else "")
                  + f"; {len(apart)} of them to a cell float32 puts more than that bound below its peak (not a tie); "
                  f"on facts the model knows {sum(k for _, _, k in moved)}/{n_known}")
            print(f"  ceiling: a 512x640x2048 matmul runs {f32:.0f} GFLOP/s in float32, {b16:.0f} in bfloat16 here "
                  f"({b16 / f32:.2f}x)")
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
