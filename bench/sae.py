"""The SAE bar of issue #24, end to end on a real model, with SAELens' own trainer side by side.

    nice -n 10 python bench/sae.py --model smollm2-135m-instruct --site blocks.15.hook_resid_post \\
        --mlp-layer 15 --tokens 500000 --saelens-venv /tmp/neurotrace-saelens-golden
    nice -n 10 python bench/sae.py --model gemma-3-270m --site blocks.6.hook_resid_post --mlp-layer 6 ...

1. ``capture`` over the built-in corpus (``python-docs``): ``--tokens`` tokens in 128-token contexts,
   the SAE site plus a middle MLP's input (``ln2.hook_normalized``) and output (``hook_mlp_out``),
   states stored as float16 and memory-mapped.
2. ``fit_sae``: an ``--expansion``-wide TopK SAE (k = ``--k``) with batch ``--batch``, ``--epochs`` passes,
   AuxK, held-out steps (contexts) for the metrics and the splice (CE loss score on held-out contexts).
3. SAELens' ``SAETrainer`` on the *same* training rows of the same state file, same d_sae, k, batch,
   steps, learning rate and schedule, run by ``bench/saelens_side.py`` in the throwaway venv that
   ``scripts/golden/saelens_golden.sh`` makes (torch 2.13.0 + sae-lens 6.54; sae-lens cannot share the
   project's venv), one after the other in this session; its saved dictionary is loaded with
   ``load_dictionary`` and judged by the same held-out metrics and splice as ours.
4. A transcoder on the middle MLP (input -> ``hook_mlp_out``, with the linear skip ``W_skip`` unless
   ``--no-transcoder-skip``): explained variance of the MLP output.

The bar: end to end <= 20 min per model, EV >= 0.80, dead <= 5%, CE loss score >= 0.90, EV within
0.01 of SAELens' or better, training throughput >= 1.0x SAELens', transcoder EV >= 0.70. Prints one
table and writes ``--out``/results.json (with the date, ``uptime`` load and thread count).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from neurotrace import CaptureRequest, FitSAERequest, run_capture, run_fit_sae
from neurotrace.lab.capture.store import load_trace_dataset
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.progress import Reporter
from neurotrace.lab.sae.dictionary import load_dictionary
from neurotrace.lab.sae.evaluate import reconstruction_stats
from neurotrace.lab.sae.run import _splice, _split, massive_limit
from neurotrace.lab.sae.train import RowSource

HERE = Path(__file__).resolve().parent


def timed_reporter(marks: dict[str, float]) -> Reporter:
    """A reporter noting when training starts and when evaluation starts (the training loop's time)."""
    def on(done: float, total: float | None, message: str) -> None:
        now = time.perf_counter()
        if message.startswith("training step") and "train_start" not in marks:
            marks["train_start"] = now
        if message == "evaluating":
            marks["train_end"] = now
    return Reporter(on_progress=on)


def fit(lab: Lab, request: FitSAERequest) -> tuple[dict, float, float]:
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    res = run_fit_sae(request, lab=lab, reporter=timed_reporter(marks))
    total = time.perf_counter() - t0
    return {**res.metrics, "run_id": res.run_id, "verdict": res.verdict}, total, \
        marks.get("train_end", t0) - marks.get("train_start", t0)


def saelens_side(args: argparse.Namespace, lab: Lab, cap_id: str, request: FitSAERequest, out: Path) -> dict:
    """Train SAELens' TopK on our training rows in the throwaway venv; judge it like ours."""
    python = Path(args.saelens_venv) / "bin" / "python"
    if not python.exists():
        return {"skipped": f"no venv at {args.saelens_venv}: run scripts/golden/saelens_golden.sh first"}
    ds = load_trace_dataset(lab, cap_id, request.site)
    limit = massive_limit(ds.states)  # the same rows as ours: massive-norm rows left out of training and metrics
    train_idx, held_idx, held_steps = _split(ds, request, limit)
    np.save(out / "train_idx.npy", train_idx)
    states = lab.store.artifact_path(cap_id, f"arrays/states/{request.site}.npy")
    folder = out / "inputs" / "saelens_topk"
    cmd = [str(python), str(HERE / "saelens_side.py"), "--states", str(states), "--index", str(out / "train_idx.npy"),
           "--d-sae", str(args.expansion * ds.states.shape[1]), "--k", str(args.k), "--batch", str(args.batch),
           "--steps", str(args.steps), "--lr", str(args.lr), "--lr-warm-up-steps", str(args.lr_warm_up),
           "--lr-decay-steps", str(args.lr_decay), "--dead-window", str(args.dead_window),
           "--threads", str(args.threads), "--hook", request.site, "--out", str(folder)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"failed": proc.stderr[-2000:]}
    timing = json.loads((folder / "timing.json").read_text(encoding="utf-8"))
    d = load_dictionary(lab, "saelens_topk")
    held = reconstruction_stats(d, RowSource(ds.states, torch.device("cpu"), 2 << 30, index=held_idx), 1)
    spliced, _ = _splice(request, ds, d, lab, held_steps, limit)
    return {"explained_variance": held.explained_variance, "mse": held.mse, "l0": held.l0,
            "dead_fraction": timing["dead_features"] / d.cfg.d_sae, "dead_fraction_heldout": held.dead_fraction,
            "ce_loss_score": spliced.get("ce_loss_score"), "kl_div_with_sae": spliced.get("kl_div_with_sae"),
            "train_seconds": timing["seconds"], "wall_seconds": wall, "rows_per_s": timing["rows_per_s"],
            "sae_lens": timing["sae_lens"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--site", default="blocks.15.hook_resid_post")
    p.add_argument("--mlp-layer", type=int, default=15)
    p.add_argument("--tokens", type=int, default=500_000)
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=0, help="optimizer steps (0: --epochs passes over the training rows)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-warm-up", type=int, default=0)
    p.add_argument("--lr-decay", type=int, default=-1, help="linear decay steps (-1: the last 20%%)")
    p.add_argument("--dead-window", type=int, default=0, help="0: a quarter of the steps")
    p.add_argument("--splice-steps", type=int, default=64, help="held-out contexts re-run with the SAE spliced in")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--saelens-venv", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "neurotrace-saelens-golden"))
    p.add_argument("--no-transcoder", action="store_true")
    p.add_argument("--no-transcoder-skip", action="store_true", help="a transcoder without the linear skip W_skip")
    p.add_argument("--out", default="")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out or f"/tmp/neurotrace-bench-sae-{args.model}")
    (out / "inputs").mkdir(parents=True, exist_ok=True)
    lab = Lab(LabSettings(runs_dir=out / "runs", threads=args.threads))
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    t_all = time.perf_counter()

    mlp_in, mlp_out = f"blocks.{args.mlp_layer}.ln2.hook_normalized", f"blocks.{args.mlp_layer}.hook_mlp_out"
    sites = [args.site] + ([] if args.no_transcoder else [mlp_in, mlp_out])
    t0 = time.perf_counter()
    cap = run_capture(CaptureRequest(model=args.model, sites=sites, corpus="python-docs", max_tokens=args.tokens,
                                     context_size=args.context_size, store_dtype="float16", batch_size=8),
                      lab=lab, reporter=Reporter())
    t_capture = time.perf_counter() - t0
    n_rows = len(load_trace_dataset(lab, cap.run_id, args.site))
    steps = args.steps or max(1, args.epochs * int(n_rows * 0.95) // args.batch)
    args.steps = steps
    args.lr_decay = steps // 5 if args.lr_decay < 0 else args.lr_decay
    args.dead_window = args.dead_window or max(10, steps // 4)
    common = dict(capture_run_id=cap.run_id, architecture="topk", expansion_factor=args.expansion, k=args.k,
                  batch_size=args.batch, n_steps=steps, lr=args.lr, lr_warm_up_steps=args.lr_warm_up,
                  lr_decay_steps=args.lr_decay, dead_feature_window=args.dead_window, heldout_fraction=0.05,
                  n_examples=1, resample_dead=False)
    request = FitSAERequest(site=args.site, splice_steps=args.splice_steps, **common)
    ours, t_fit, t_train = fit(lab, request)
    ours["rows_per_s"] = steps * args.batch / max(t_train, 1e-9)
    ours["train_seconds"] = t_train
    end_to_end = time.perf_counter() - t_all
    theirs = saelens_side(args, lab, cap.run_id, request, out)
    tc = None
    if not args.no_transcoder:
        tc_metrics, t_tc, _ = fit(lab, FitSAERequest(site=mlp_in, out_site=mlp_out, splice_steps=args.splice_steps,
                                                      skip=not args.no_transcoder_skip, **common))
        tc = {**tc_metrics, "seconds": t_tc}
    result = {"model": args.model, "site": args.site, "started": started, "load_before": load_before,
              "load_after": os.getloadavg(), "threads": args.threads, "tokens": args.tokens, "rows": n_rows,
              "steps": steps, "batch": args.batch, "k": args.k, "expansion": args.expansion, "lr": args.lr,
              "capture_seconds": t_capture, "fit_seconds": t_fit, "end_to_end_seconds": end_to_end,
              "ours": ours, "saelens": theirs, "transcoder": tc, "transcoder_skip": not args.no_transcoder_skip,
              "epochs": args.epochs, "python": sys.version.split()[0]}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k not in ("ours", "saelens", "transcoder")}, default=str))
    keys = ("explained_variance", "dead_fraction", "ce_loss_score", "l0", "rows_per_s", "train_seconds")
    for name, m in (("neurotrace", ours), ("sae_lens", theirs), ("transcoder", tc or {})):
        print(f"{name:11}", "  ".join(f"{k}={m[k]:.4g}" if isinstance(m.get(k), float) else f"{k}={m.get(k)}"
                                      for k in keys))


if __name__ == "__main__":
    main()
