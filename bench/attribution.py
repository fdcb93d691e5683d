"""Benchmark: the compiled-circuit attribution scoring (vectorised) vs a per-step / per-feature loop.

The peer is the straightforward implementation: integrated gradients with one autograd call per path
step, and activation patching with one forward per patched feature. Both run side by side in this
process on the same circuits, data and donors; the script prints the wall time of each, the
speed-up, and the largest difference in the importances (must be ~1e-15: same maths, float64).

    python bench/attribution.py [--seeds 16] [--samples 512] [--ig-steps 128] [--threads 1]
"""

import argparse
import time

import torch

from neurotrace.lab.benchmark.attribution import (
    autograd_jacobian,
    integrated_gradients,
    patching,
    score_circuits,
)
from neurotrace.lab.benchmark.circuits import REGIMES, build_circuit, sample_inputs


def loop_integrated_gradients(circuit, x, steps):
    total = torch.zeros_like(x)
    for k in range(steps):
        total += autograd_jacobian(circuit, (k + 0.5) / steps * x)
    return (x * total / steps).abs().mean(0)


def loop_patching(circuit, x, g):
    donor = x[torch.randperm(len(x), generator=g)]
    out = torch.empty(x.shape[1], dtype=x.dtype)
    for i in range(x.shape[1]):
        xp = x.clone()
        xp[:, i] = donor[:, i]
        out[i] = (circuit(xp) - circuit(x)).abs().mean()
    return out


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--ig-steps", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = []
    for s in range(args.seeds):
        g = torch.Generator().manual_seed(s)
        data += [(build_circuit(r), sample_inputs(r, args.samples, g)) for r in REGIMES]

    ours, t_ours = timed(lambda: [(integrated_gradients(c, x, None, args.ig_steps),
                                   patching(c, x, torch.Generator().manual_seed(1))) for c, x in data])
    peer, t_peer = timed(lambda: [(loop_integrated_gradients(c, x, args.ig_steps),
                                   loop_patching(c, x, torch.Generator().manual_seed(1))) for c, x in data])
    diff = max(float((a - b).abs().max()) for pair_a, pair_b in zip(ours, peer, strict=True)
               for a, b in zip(pair_a, pair_b, strict=True))
    _, t_full = timed(lambda: score_circuits(args.seeds, args.samples, args.ig_steps))
    print(f"{args.seeds} seeds x {len(REGIMES)} circuits x {args.samples} samples, IG {args.ig_steps} steps, "
          f"{args.threads} thread(s)")
    print(f"IG + patching, vectorised: {t_ours:.2f} s;  per-step/per-feature loop: {t_peer:.2f} s;  "
          f"speed-up {t_peer / t_ours:.1f}x;  max |difference| {diff:.1e}")
    print(f"whole circuits part (5 methods, AUROC, null): {t_full:.2f} s")


if __name__ == "__main__":
    main()
