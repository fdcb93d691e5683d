"""fit_sae: learn a sparse autoencoder on states a capture run recorded, and judge it.

The public SAE API::

    from neurotrace.lab.sae import load_sae
    sae = load_sae(run_dir)          # sae.safetensors + sae_config.json, no pickle
    a = sae.encode(h)                # (..., d_sae) feature activations
    h_hat = sae.decode(a)            # (..., d_in) reconstruction

Method: load one site of a capture run (:func:`neurotrace.lab.capture.store.load_trace_dataset`), build
the architecture (:mod:`neurotrace.lab.sae.registry`: ``relu`` = ReLU + L1, ``topk`` = TopK), train it with
Adam on seeded batches (:mod:`neurotrace.lab.sae.train`), then measure reconstruction, sparsity,
dead features and the downstream effect of splicing the reconstruction back into the model
(:mod:`neurotrace.lab.sae.evaluate`), and list each feature's top-activating tokens with context.
The same seed, states and settings give bit-identical weights on CPU.
"""

from typing import Any

import numpy as np
import torch

from neurotrace.lab.capture import TraceDataset, load_trace_dataset
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.loading import ModelRef, resolve_device
from neurotrace.lab.model.tokens import target_id
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.sae.base import SAE, SAEConfig
from neurotrace.lab.sae.evaluate import ReconStats, reconstruction_stats, splice_metrics
from neurotrace.lab.sae.registry import build_sae, from_tensors
from neurotrace.lab.sae.schema import FitSAERequest, FitSAEResult
from neurotrace.lab.sae.train import RowSource, TrainSettings, train_sae
from neurotrace.lab.seeding import make_generator

__all__ = ["SAE", "SAEConfig", "FitSAERequest", "FitSAEResult", "run_fit_sae", "load_sae_run"]


def _config(request: FitSAERequest, ds: TraceDataset) -> SAEConfig:
    d_in = int(ds.states.shape[1])
    d_sae = request.d_sae or request.expansion_factor * d_in
    if request.architecture == "topk" and request.k > d_sae:
        raise InputError("k", f"k={request.k} exceeds d_sae={d_sae}", fix=f"use k <= {d_sae}")
    return SAEConfig(architecture=request.architecture, d_in=d_in, d_sae=d_sae,
                     k=request.k if request.architecture == "topk" else None, site=ds.site,
                     model=ds.info["model"], capture_run=ds.run_id)


def _example_rows(ds: TraceDataset, stats: ReconStats, width: int) -> list[dict[str, Any]]:
    rows = []
    for f in range(stats.top_rows.shape[0]):
        for rank, (row, value) in enumerate(zip(stats.top_rows[f], stats.top_values[f], strict=True)):
            if row < 0:
                break
            rows.append({"feature": f, "rank": rank, "activation": f"{float(value):.6g}", "row": int(row),
                         "step": int(ds.meta["step"][row]), "pos": int(ds.meta["pos"][row]),
                         "token": ds.token(int(row)), "context": ds.context(int(row), width)})
    return rows


def _splice(request: FitSAERequest, ds: TraceDataset, sae: SAE, lab: Lab) -> dict[str, Any]:
    if request.splice_steps == 0:
        return {}
    ref = ModelRef(model=ds.info["model"], device=request.device)
    with lab.cache.lease(ref) as lm:
        if lm.fingerprint != ds.info["fingerprint"]:
            raise InputError("capture_run", f"model {ds.info['model']!r} changed since the capture",
                             fix="re-capture, or set splice_steps=0")
        return splice_metrics(lm, sae.to(lm.device), ds.site, ds.steps[:request.splice_steps],
                              lambda t: target_id(lm.tokenizer, t))


def _figure(log: list[dict[str, float]], stats: ReconStats) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot([e["step"] for e in log], [e["loss"] for e in log])
    ax1.set(xlabel="step", ylabel="training loss", yscale="log", title="SAE training")
    density = np.log10(np.maximum(stats.fire_counts, 0.5) / max(1, stats.fire_counts.sum() / max(stats.l0, 1e-9)))
    ax2.hist(density, bins=30)
    ax2.set(xlabel="log10 feature firing frequency", ylabel="features", title="feature density")
    return fig


def run_fit_sae(request: FitSAERequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> FitSAEResult:
    """Fit a seeded sparse autoencoder (topk or relu) on one site of a capture run; writes sae.safetensors,
    sae_config.json, sae_metrics.json (MSE, FVU, L0, dead features, spliced loss) and top examples."""
    ds = load_trace_dataset(lab, request.capture_run, request.site)
    cfg = _config(request, ds)
    device = resolve_device(request.device)
    with lab.store.open_run("fit_sae", request, seed=request.seed) as run:
        run.add_input(request.capture_run)
        run.add_model(ds.info["model"], ds.info["fingerprint"])
        sae = build_sae(cfg, l1_coefficient=request.l1_coefficient).to(device)
        source = RowSource(ds.states, device, TrainSettings.max_in_memory_bytes)
        settings = TrainSettings(n_steps=request.n_steps, batch_size=request.batch_size, lr=request.lr)
        log = train_sae(sae, source, settings, make_generator(request.seed),
                        on_step=lambda s, n: reporter.step(s, n + 1, f"training step {s}"))
        reporter.step(request.n_steps, request.n_steps + 1, "evaluating")
        stats = reconstruction_stats(sae, source, request.n_examples)
        metrics = {"mse": stats.mse, "fvu": stats.fvu, "l0": stats.l0, "dead_fraction": stats.dead_fraction,
                   "final_loss": log[-1]["loss"], **_splice(request, ds, sae, lab)}
        return _write(run, request, ds, sae, stats, metrics, log)


def _write(run: Any, request: FitSAERequest, ds: TraceDataset, sae: SAE, stats: ReconStats,
           metrics: dict[str, Any], log: list[dict[str, float]]) -> FitSAEResult:
    cfg = sae.cfg
    sae_uri = run.write_tensors("sae.safetensors", sae.tensors())
    run.write_json("sae_config.json", cfg)
    run.write_json("sae_metrics.json", {**metrics, "n_rows": len(ds), "seed": request.seed, "training": log})
    examples = run.write_csv("tables/top_examples.csv", _example_rows(ds, stats, request.context_tokens),
                             ["feature", "rank", "activation", "row", "step", "pos", "token", "context"])
    run.write_csv("tables/feature_density.csv",
                  [{"feature": f, "fire_count": int(c), "fire_rate": f"{c / len(ds):.6g}"}
                   for f, c in enumerate(stats.fire_counts)])
    fig = run.write_figure("figures/sae_training.png", _figure(log, stats))
    downstream = ""
    if metrics.get("ce_delta") is not None:
        downstream = f" Splicing it in changes next-token loss by {metrics['ce_delta']:+.4f} nats."
    summary = (f"Fitted a {cfg.architecture} SAE ({cfg.d_in} -> {cfg.d_sae} features) on {len(ds)} rows of "
               f"{cfg.site}: FVU {stats.fvu:.4f}, L0 {stats.l0:.2f}, {stats.dead_fraction:.1%} dead features."
               + downstream)
    run.set_summary(summary)
    nxt = (f"Call intervene with sae_run='{run.run_id}' and prompts to ablate/clamp/patch features and rank "
           "the most causal ones; read tables/top_examples.csv to interpret features.")
    return FitSAEResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=[fig],
                        site=cfg.site, d_in=cfg.d_in, d_sae=cfg.d_sae, architecture=cfg.architecture,
                        n_rows=len(ds), metrics=metrics, sae=sae_uri, examples=examples, next=nxt)


def load_sae_run(lab: Lab, run_id: str, device: str | torch.device = "cpu", field: str = "sae_run") -> SAE:
    """The SAE a fit_sae run saved."""
    manifest = lab.store.manifest(run_id)
    if manifest.tool != "fit_sae" or manifest.status != "complete":
        raise InputError(field, f"run {run_id} is a {manifest.status} {manifest.tool} run, not a complete fit_sae",
                         fix="pass the run_id a fit_sae call returned")
    cfg = SAEConfig.model_validate(lab.store.read_json(run_id, "sae_config.json"))
    return from_tensors(cfg, lab.store.read_tensors(run_id, "sae.safetensors"), device)
