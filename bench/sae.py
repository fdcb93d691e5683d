"""SAE fit throughput: neurotrace vs SAELens on the same states, same batches, same init, same process.

    python bench/sae.py                     # states captured from the embedded fact-gpt2 (CPU)
    python bench/sae.py --device cuda --synthetic-d-in 768 --rows 200000 --batch 4096 --expansion 32

What is matched: the architecture (ReLU + decoder-norm-weighted L1 -> SAELens ``StandardTrainingSAE``;
TopK -> ``TopKTrainingSAE`` with its AuxK loss off, since ours has none), ``d_sae``, ``k``, ``l1``,
Adam with the same learning rate and betas, the initial weights (ours, copied into theirs), and the
batch order (the same index batches from one seeded generator, gathered from the same in-memory
tensor). The timed loop is forward + loss + backward + optimizer step (+ our TopK decoder
renormalisation); SAELens is driven through ``training_forward_pass`` (its ``SAETrainer`` adds
logging and evals on top). Metrics (MSE, FVU, L0, dead fraction) use one evaluation function for both.

SAELens 6 imports ``transformer_lens.HookedTransformer`` and a few other TransformerLens 2/3 modules
that TransformerLens 4 removed; this script stubs those module names (no SAE code uses them) before
importing SAELens. Install SAELens with ``pip install --no-deps sae-lens simple-parsing python-dotenv
tenacity`` (plain ``pip install sae-lens`` would downgrade transformer-lens to 3.x). Without SAELens the
script prints our figures and says why the comparison was skipped.
"""

import argparse
import importlib
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from neurotrace.lab.sae.registry import SAEConfig, build_sae
from neurotrace.lab.sae.train import RowSource, TrainSettings, batch_indices, train_sae
from neurotrace.lab.seeding import make_generator


def import_saelens():
    """Import sae_lens under TransformerLens 4 by stubbing the removed modules; None if impossible."""
    try:
        from transformer_lens.HookedRootModule import HookedRootModule
    except ImportError:
        HookedRootModule = None

    class Stub(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            value = type(name, (), {})
            setattr(self, name, value)
            return value

    def stub(name):
        mod = Stub(name)
        mod.__path__ = []
        sys.modules[name] = mod
        return mod

    if "transformer_lens.HookedTransformer" not in sys.modules:
        import transformer_lens

        stub("transformer_lens.HookedTransformer").HookedRootModule = HookedRootModule
        transformer_lens.HookedTransformer = type("HookedTransformer", (), {})   # TL4 raises on access
    for _ in range(40):
        try:
            return importlib.import_module("sae_lens")
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.startswith("sae_lens"):
                print(f"SAELens unavailable: {exc}")
                return None
            parts = exc.name.split(".")
            for j in range(1, len(parts) + 1):
                name = ".".join(parts[:j])
                if name not in sys.modules:
                    try:
                        importlib.import_module(name)
                    except ModuleNotFoundError:
                        stub(name)
            for key in [k for k in sys.modules if k.startswith("sae_lens")]:
                del sys.modules[key]
        except Exception as exc:  # noqa: BLE001 - any import failure means "skip the peer"
            print(f"SAELens unavailable: {type(exc).__name__}: {exc}")
            return None
    return None


def captured_states(rows: int) -> np.ndarray:
    """MLP neurons of the embedded fact-gpt2 (layer 3) over its fact prompts, or a tiny model's."""
    from neurotrace import CaptureRequest, run_capture
    from neurotrace.lab.capture.store import load_trace_dataset
    from neurotrace.lab.lab import Lab, LabSettings
    from neurotrace.lab.model.weights.embedded import embedded_model_path
    from neurotrace.lab.progress import NULL_REPORTER

    tmp = Path(tempfile.mkdtemp())
    path = embedded_model_path("fact-gpt2")
    if path is not None:
        import json

        facts = json.loads((path / "facts.json").read_text(encoding="utf-8"))
        prompts = [f["template"].format(f["clean_subject"]) + " " + f["target"] for f in facts]
        model, site = str(path), "blocks.3.mlp.hook_post"
    else:
        from neurotrace.testing.tiny import WORDS, build_tiny

        rnd = np.random.default_rng(0)
        prompts = [" ".join(rnd.choice(WORDS, 12)) for _ in range(400)]
        model, site = str(build_tiny("gpt2", tmp / "tiny", d_model=64)), "blocks.1.mlp.hook_post"
    lab = Lab(LabSettings(runs_dir=tmp / "runs"))
    res = run_capture(CaptureRequest(model=model, sites=[site], prompts=prompts), lab=lab, reporter=NULL_REPORTER)
    states = np.array(load_trace_dataset(lab, res.run_id, site).states)
    print(f"states: {states.shape[0]} rows x {states.shape[1]} from {Path(model).name} {site}")
    reps = int(np.ceil(rows / states.shape[0])) if rows else 1
    return np.concatenate([states] * reps)[: rows or None]


@torch.no_grad()
def evaluate(sae, x: torch.Tensor) -> dict[str, float]:
    err = var = l0 = 0.0
    fired = torch.zeros(sae.W_dec.shape[0], dtype=torch.bool, device=x.device)
    mean = x.double().mean(0)
    for start in range(0, x.shape[0], 8192):
        h = x[start:start + 8192]
        a = sae.encode(h)
        err += float((sae.decode(a).double() - h).pow(2).sum())
        var += float((h.double() - mean).pow(2).sum())
        l0 += float((a > 0).sum())
        fired |= (a > 0).any(0)
    n = x.shape[0]
    return {"mse": err / (n * x.shape[1]), "fvu": err / var, "l0": l0 / n, "dead": float((~fired).float().mean())}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_ours(arch, cfg, source, settings, l1, init, seed, device):
    sae = build_sae(cfg, l1_coefficient=l1).to(device)
    sae.load_state_dict(init)
    # keep the shared init, but draw what init would draw so the batch order matches SAELens's run
    sae.init_weights = lambda gen, b_dec=None: torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
    gen = make_generator(seed)
    sync(device)
    t0 = time.perf_counter()
    train_sae(sae, source, settings, gen)
    sync(device)
    return sae, time.perf_counter() - t0


def run_saelens(sl, arch, cfg, source, settings, l1, init, seed, device):
    common = dict(d_in=cfg.d_in, d_sae=cfg.d_sae, device=str(device), dtype="float32")
    if arch == "topk":
        their_cfg, cls, coeffs = sl.TopKTrainingSAEConfig(k=cfg.k, aux_loss_coefficient=0.0, **common), \
            sl.TopKTrainingSAE, {}
    else:
        their_cfg, cls, coeffs = sl.StandardTrainingSAEConfig(l1_coefficient=l1, **common), \
            sl.StandardTrainingSAE, {"l1": l1}
    sae = cls(their_cfg)
    sae.load_state_dict({k: v.clone() for k, v in init.items()}, strict=False)
    opt = torch.optim.Adam(sae.parameters(), lr=settings.lr)
    step_input = sl.saes.sae.TrainStepInput
    sync(device)
    t0 = time.perf_counter()
    gen = make_generator(seed)
    torch.randn(cfg.d_sae, cfg.d_in, generator=gen)     # consume the init draw so batches match ours
    for step, idx in enumerate(batch_indices(source.n, settings.batch_size, settings.n_steps, gen)):
        out = sae.training_forward_pass(step_input(sae_in=source.rows(idx), coefficients=coeffs,
                                                   dead_neuron_mask=None, n_training_steps=step,
                                                   is_logging_step=False))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    sync(device)
    return sae, time.perf_counter() - t0


def shared_init(cfg, l1, source, seed, device) -> dict[str, torch.Tensor]:
    sae = build_sae(cfg, l1_coefficient=l1).to(device)
    sae.init_weights(make_generator(seed), b_dec=source.mean())
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}


def bench_arch(arch, args, source, settings, sl, device) -> None:
    cfg = SAEConfig(architecture=arch, d_in=source.tensor.shape[1], d_sae=args.expansion * source.tensor.shape[1],
                    k=args.k if arch == "topk" else None)
    init = shared_init(cfg, args.l1, source, 0, device)
    runners = {"neurotrace": lambda: run_ours(arch, cfg, source, settings, args.l1, init, 0, device)}
    if sl is not None:
        runners["sae_lens"] = lambda: run_saelens(sl, arch, cfg, source, settings, args.l1, init, 0, device)
    best: dict[str, tuple] = {}
    for _ in range(args.repeats):              # interleaved repeats; the fastest of each is reported
        for name, fn in runners.items():
            sae, secs = fn()
            if name not in best or secs < best[name][1]:
                best[name] = (sae, secs)
    base = None
    for name in runners:
        sae, secs = best[name]
        rate = args.steps * min(args.batch, source.n) / secs
        base = base or rate
        m = evaluate(sae, source.tensor)
        print(f"{arch:5} {name:10} {rate:12.0f} {rate / base:6.2f} {m['mse']:11.4g} {m['fvu']:8.4f} "
              f"{m['l0']:7.2f} {m['dead']:6.3f}")
    if len(best) == 2:
        print(f"{arch:5} neurotrace / sae_lens throughput: {best['sae_lens'][1] / best['neurotrace'][1]:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", choices=["topk", "relu", "both"], default="both")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--l1", type=float, default=0.3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rows", type=int, default=0, help="repeat/trim the captured states to this many rows")
    p.add_argument("--synthetic-d-in", type=int, default=0, help="use Gaussian states of this width instead")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed runs per implementation (best kept)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.synthetic_d_in:
        g = make_generator(0)
        x = torch.randn(args.rows or 65536, args.synthetic_d_in, generator=g).numpy()
        print(f"states: {x.shape[0]} rows x {x.shape[1]} synthetic Gaussian")
    else:
        x = captured_states(args.rows)
    source = RowSource(x, device, 1 << 40)
    settings = TrainSettings(n_steps=args.steps, batch_size=args.batch, lr=args.lr, log_every=10**9)
    sl = import_saelens()
    archs = ["topk", "relu"] if args.arch == "both" else [args.arch]
    print(f"device {device}, threads {args.threads}, steps {args.steps}, batch {args.batch}, "
          f"d_sae {args.expansion} x d_in, k {args.k}, l1 {args.l1}, lr {args.lr}")
    print(f"{'arch':5} {'impl':10} {'acts/s':>12} {'ratio':>6} {'mse':>11} {'fvu':>8} {'l0':>7} {'dead':>6}")
    for arch in archs:
        bench_arch(arch, args, source, settings, sl, device)
    if sl is None:
        print("SAELens comparison skipped (see above); install it as the module docstring says.")


if __name__ == "__main__":
    main()
