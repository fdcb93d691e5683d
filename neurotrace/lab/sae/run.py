"""fit_sae: learn a sparse autoencoder on states a capture run recorded, and judge it.

The public SAE API::

    from neurotrace.lab.sae import load_sae
    sae = load_sae(run_dir)          # sae.safetensors + sae_config.json, no pickle
    a = sae.encode(h)                # (..., d_sae) feature activations
    h_hat = sae.decode(a)            # (..., d_in) reconstruction

Method: load one site of a capture run (:func:`neurotrace.lab.capture.load_trace_dataset`; a transcoder
also loads ``out_site``, the same rows); leave out rows at position 0 and at special tokens
(``exclude_special``) and hold out a seeded share of the steps, i.e. whole contexts of a corpus capture
(``heldout_fraction``); scale inputs (and a transcoder's targets) to mean norm ``sqrt(d)`` (``normalize``,
the factors saved and folded into the SAELens export); build the architecture as SAELens defines it
(:mod:`neurotrace.lab.sae.architectures.registry`: ``topk`` with AuxK, ``batchtopk``, ``jumprelu``, ``relu`` + L1),
initialise it SAELens' way (decoder rows of fixed norm, encoder = decoder transposed, ``b_dec`` at the
mean or geometric median) and train it with Adam on seeded batches (linear LR warm-up and decay;
:mod:`neurotrace.lab.sae.train`), streaming from the memory-mapped state array when it is large; then
measure reconstruction, sparsity and the downstream effect of splicing the reconstruction back into
the model on the held-out contexts (:mod:`neurotrace.lab.sae.evaluate`, SAELens' names), give a verdict
(:mod:`neurotrace.lab.sae.verdict`), list each feature's top-activating tokens, and write the
dictionary twice: ``sae.safetensors`` + ``sae_config.json`` (training space) and ``saelens/`` (SAELens'
layout, model units). The same seed, states and settings give bit-identical weights on CPU.
"""

from typing import Any

import numpy as np
import torch

from neurotrace.lab.capture import TraceDataset, load_trace_dataset
from neurotrace.lab.effects import Damage, describe
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.tokens import target_id
from neurotrace.lab.model.weights.loading import ModelRef, resolve_device
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.sae.architectures.base import SAE, SAEConfig
from neurotrace.lab.sae.architectures.registry import build_sae, from_tensors
from neurotrace.lab.sae.density import SPARSITY_FILE, sparsity_tensors
from neurotrace.lab.sae.evaluate import (
    ReconStats,
    fire_rate_histogram,
    reconstruction_stats,
    splice_damage,
    splice_metrics,
)
from neurotrace.lab.sae.export import dictionary_from_sae
from neurotrace.lab.sae.figures import training as training_figure
from neurotrace.lab.sae.saelens import CFG_FILE as CFG_FILE_SAELENS
from neurotrace.lab.sae.saelens import WEIGHTS_FILE
from neurotrace.lab.sae.schema import FitSAERequest, FitSAEResult, SAEMetrics, TrainingStep
from neurotrace.lab.sae.train import RowSource, TrainSettings, train_sae
from neurotrace.lab.sae.verdict import RULES, sae_verdict
from neurotrace.lab.seeding import make_generator

__all__ = ["SAE", "SAEConfig", "FitSAERequest", "FitSAEResult", "run_fit_sae", "load_sae_run"]

CONFIG_FILE, METRICS_FILE = "sae_config.json", "sae_metrics.json"


def _config(request: FitSAERequest, ds: TraceDataset, scale: float, out: TraceDataset | None,
            out_scale: float | None) -> SAEConfig:
    d_in = int(ds.states.shape[1])
    d_sae = request.d_sae or request.expansion_factor * d_in
    topk = request.architecture in ("topk", "batchtopk")
    if topk and request.k > d_sae:
        raise InputError("k", f"k={request.k} exceeds d_sae={d_sae}", fix=f"use k <= {d_sae}")
    if request.skip and out is None:
        raise InputError("skip", "a skip connection belongs to a transcoder", fix="set out_site, or skip=false")
    extra = {"out_site": out.site, "d_out": int(out.states.shape[1]), "output_scale": out_scale,
             "skip": request.skip} if out is not None else {}
    return SAEConfig(architecture=request.architecture, d_in=d_in, d_sae=d_sae, k=request.k if topk else None,
                     site=ds.site, model=ds.info.model, capture_run_id=ds.run_id, input_scale=scale, **extra)


def _out_dataset(lab: Lab, request: FitSAERequest, ds: TraceDataset) -> TraceDataset | None:
    """A transcoder's target site of the same capture run (its rows must be the input's rows)."""
    if not request.out_site:
        return None
    if request.out_site == ds.site:
        raise InputError("out_site", f"out_site is the input site {ds.site}", fix="omit out_site to fit an SAE")
    out = load_trace_dataset(lab, request.capture_run_id, request.out_site)
    if len(out) != len(ds) or not np.array_equal(out.meta["token_id"], ds.meta["token_id"]):
        raise InputError("out_site", f"sites {ds.site} and {out.site} of run {ds.run_id} hold different rows",
                         fix="capture both sites in one capture call")
    return out


#: a row whose norm exceeds this multiple of the median row norm is a massive activation (in SmolLM2 a few
#: first-content tokens reach 10-100x the median, and 13 of 49,530 corpus rows carried 62% of the variance):
#: with exclude_special it is left out of training, the metrics and the splice, like a special token
MASSIVE_NORM = 10.0


def massive_limit(states: np.ndarray, chunk: int = 65_536) -> float:
    """The norm above which a row of ``states`` (N, D) counts as a massive activation."""
    norms = np.concatenate([np.linalg.norm(np.asarray(states[i:i + chunk], dtype=np.float32), axis=1)
                            for i in range(0, len(states), chunk)])
    return float(MASSIVE_NORM * np.median(norms)) if len(norms) else float("inf")


def fitted_positions(ids: list[int], special_ids: set[int] | list[int], states: torch.Tensor) -> list[int]:
    """The positions of one text whose rows a fit_sae dictionary reads as it was trained: not position 0, not a
    special token, norm at most :data:`MASSIVE_NORM` x the text's median (an attention sink such as SmolLM2's
    first token, norm ~100x the rest, is none; its encoding is off the training distribution, where features
    fire in the hundreds). All positions when that leaves none."""
    special = set(special_ids)
    norms = states.float().norm(dim=-1)
    limit = MASSIVE_NORM * float(norms.median()) if len(norms) else float("inf")
    keep = [p for p, t in enumerate(ids) if p > 0 and t not in special and float(norms[p]) <= limit]
    return keep or list(range(len(ids)))


def _excluded(ds: TraceDataset, request: FitSAERequest, limit: float | None = None) -> np.ndarray:
    """(N,) bool: the rows :func:`excluded_rows` leaves out, where ``request.exclude_special``; else none."""
    if not request.exclude_special:
        return np.zeros(len(ds), dtype=bool)
    return excluded_rows(ds, limit)


def excluded_rows(ds: TraceDataset, limit: float | None = None) -> np.ndarray:
    """(N,) bool: rows a dictionary is not trained on: at position 0, on a special token, or carrying a massive
    activation (norm above ``limit``, :func:`massive_limit`)."""
    special = np.asarray(ds.info.special_ids, dtype=np.int64)
    out = (ds.meta["pos"] == 0) | np.isin(ds.meta["token_id"], special)
    if limit is not None and np.isfinite(limit):
        chunk = 65_536
        for i in range(0, len(ds), chunk):
            out[i:i + chunk] |= np.linalg.norm(np.asarray(ds.states[i:i + chunk], dtype=np.float32), axis=1) > limit
    return out


def _split(ds: TraceDataset, request: FitSAERequest, limit: float | None = None
           ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Training rows, held-out rows (both excluding special rows) and the held-out step indices."""
    keep = ~_excluded(ds, request, limit)
    n_steps = len(ds.steps)
    held_steps: list[int] = []
    if request.heldout_fraction > 0 and n_steps >= 2:
        perm = torch.randperm(n_steps, generator=make_generator(request.seed + 1)).tolist()
        held_steps = sorted(perm[:max(1, round(request.heldout_fraction * n_steps))])
    held = np.isin(ds.meta["step_index"], held_steps)
    train, heldout = np.flatnonzero(keep & ~held), np.flatnonzero(keep & held)
    if len(train) == 0:
        raise InputError("exclude_special", f"no rows of run {ds.run_id} remain for training after leaving out "
                         "position 0, special tokens and the held-out steps",
                         fix="capture more or longer prompts, or set exclude_special=false")
    return train, (heldout if len(heldout) else train), held_steps


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


def _splice(request: FitSAERequest, ds: TraceDataset, sae: SAE, lab: Lab, held_steps: list[int],
            limit: float | None = None) -> tuple[dict[str, Any], Damage | None]:
    """The splice metrics and the shared destructive-edit check of the splice (none with splice_steps 0)."""
    if request.splice_steps == 0:
        return {}, None
    ref = ModelRef(model=ds.info.model, device=request.device)
    order = held_steps + [i for i in range(len(ds.steps)) if i not in held_steps]
    steps = [ds.steps[i] for i in order[:request.splice_steps]]
    special = set(ds.info.special_ids)

    def excluded(ids: list[int]) -> torch.Tensor:
        return torch.tensor([p == 0 or t in special for p, t in enumerate(ids)])

    with lab.cache.lease(ref) as lm:
        if lm.fingerprint != ds.info.fingerprint:
            raise InputError("capture_run_id", f"model {ds.info.model!r} changed since the capture",
                             fix="re-capture, or set splice_steps=0")
        keep = excluded if request.exclude_special else None
        max_norm = limit if request.exclude_special else None
        sae = sae.to(lm.device)
        return (splice_metrics(lm, sae, ds.site, steps, lambda t: target_id(lm.tokenizer, t), keep, max_norm),
                splice_damage(lm, sae, ds.site, steps, keep, max_norm))


def run_fit_sae(request: FitSAERequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> FitSAEResult:
    """Fit a seeded sparse autoencoder (topk with AuxK, or relu) on one site of a capture run; writes
    sae.safetensors, sae_config.json, sae_metrics.json (SAELens-named metrics on held-out rows, verdict)
    and top examples."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    ds = load_trace_dataset(lab, request.capture_run_id, request.site)
    out = _out_dataset(lab, request, ds)
    device = resolve_device(request.device)
    limit = massive_limit(ds.states) if request.exclude_special else None
    train_idx, held_idx, held_steps = _split(ds, request, limit)
    in_memory = TrainSettings.max_in_memory_bytes
    source = RowSource(ds.states, device, in_memory, index=train_idx)
    target = RowSource(out.states, device, in_memory, index=train_idx) if out is not None else None
    scale, out_scale = 1.0, None
    if request.normalize == "expected_norm":
        scale = float(np.sqrt(ds.states.shape[1]) / max(source.mean_norm(), 1e-12))
        if target is not None:
            out_scale = float(np.sqrt(out.states.shape[1]) / max(target.mean_norm(), 1e-12))
    cfg = _config(request, ds, scale, out, out_scale)
    window = request.dead_feature_window or min(1000, max(10, request.n_steps // 10))
    with lab.store.open_run("fit_sae", request, seed=request.seed) as run:
        run.add_input(request.capture_run_id)
        run.add_model(ds.info.model, ds.info.fingerprint)
        sae = build_sae(cfg, l1_coefficient=request.l1_coefficient, aux_k=request.aux_k,
                        aux_coefficient=request.aux_coefficient, l0_coefficient=request.l0_coefficient).to(device)
        settings = TrainSettings(n_steps=request.n_steps, batch_size=request.batch_size, lr=request.lr,
                                 dead_feature_window=window, resample_dead=request.resample_dead,
                                 warm_up_steps=request.n_steps // 20, lr_warm_up_steps=request.lr_warm_up_steps,
                                 lr_decay_steps=request.lr_decay_steps, b_dec_init=request.b_dec_init,
                                 log_every=max(1, min(50, request.n_steps // 100)))
        log, since = train_sae(sae, source, settings, make_generator(request.seed),
                               on_step=lambda s, n: reporter.step(s, n + 1, f"training step {s}"), target=target,
                               check=reporter.check)
        reporter.step(request.n_steps, request.n_steps + 1, "evaluating")

        def rows(states: np.ndarray | None, index: np.ndarray) -> RowSource | None:
            return RowSource(states, device, in_memory, index=index) if states is not None else None

        out_states = out.states if out is not None else None
        held = reconstruction_stats(sae, rows(ds.states, held_idx), 1, target=rows(out_states, held_idx))
        every = np.sort(np.concatenate([train_idx, held_idx])) if len(held_steps) else train_idx
        everything = rows(ds.states, every)
        stats = reconstruction_stats(sae, everything, request.n_examples, target=rows(out_states, every))
        stats.top_rows = np.where(stats.top_rows >= 0, everything.index[np.maximum(stats.top_rows, 0)], -1)
        dead = int((since >= window).sum())
        n_excluded = int(_excluded(ds, request, limit).sum())
        splice, damage = _splice(request, ds, sae, lab, held_steps, limit)
        metrics = {"explained_variance": held.explained_variance, "fvu": held.fvu, "mse": held.mse, "l0": held.l0,
                   "dead_features": dead, "dead_fraction": dead / cfg.d_sae, "dead_feature_window": window,
                   "dead_fraction_heldout": held.dead_fraction, "input_scale": scale,
                   "n_train_rows": len(train_idx), "n_heldout_rows": len(held_idx) if held_steps else 0,
                   "n_excluded_rows": n_excluded, "n_massive_rows": n_excluded - int(_excluded(ds, request).sum()),
                   "massive_norm_limit": limit, "final_loss": log[-1]["loss"], **splice}
        return _write(run, request, ds, sae, stats, metrics, log, held_steps, damage)


def _write(run: Any, request: FitSAERequest, ds: TraceDataset, sae: SAE, stats: ReconStats,
           metrics: dict[str, Any], log: list[dict[str, float]], held_steps: list[int],
           damage: Damage | None = None) -> FitSAEResult:
    cfg = sae.cfg
    sae_uri = run.write_tensors("sae.safetensors", sae.tensors())
    export = dictionary_from_sae(sae, source=run.run_id, kind="run")        # SAELens' layout, scalings folded
    run.write_tensors(f"saelens/{WEIGHTS_FILE}", export.tensors())
    run.write_json(f"saelens/{CFG_FILE_SAELENS}", saelens_cfg(export, request, ds))
    run.write_tensors(f"saelens/{SPARSITY_FILE}", sparsity_tensors(stats.fire_counts / max(1, int(stats.n_rows))))
    verdict, why = sae_verdict(metrics)
    if damage is not None and damage.destructive:       # the spliced model is no longer a language model
        verdict, why = "destructive", [*damage.reasons, *why]
    run.write_json(CONFIG_FILE, cfg.model_dump(mode="json"))
    never, density = fire_rate_histogram(stats.fire_counts, stats.n_rows)
    record = SAEMetrics(verdict=verdict, below_bar=why, **metrics, n_rows=len(ds), seed=request.seed,
                        heldout_step_indices=held_steps, training=[TrainingStep(**e) for e in log],
                        model=cfg.model, site=cfg.site, architecture=cfg.architecture, d_in=cfg.d_in,
                        d_sae=cfg.d_sae, never_fired=never, fire_density=density, damage=damage)
    run.write_json(METRICS_FILE, record.model_dump(mode="json"))
    examples = run.write_csv("tables/top_examples.csv", _example_rows(ds, stats, request.context_tokens),
                             ["feature", "rank", "activation", "row", "step", "pos", "token", "context"])
    run.write_csv("tables/feature_density.csv",
                  [{"feature": f, "fire_count": int(c), "fire_rate": f"{c / max(1, int(stats.n_rows)):.6g}"}
                   for f, c in enumerate(stats.fire_counts)])
    fig = run.write_figure("figures/sae_training.png", training_figure(record))
    summary = _summary(cfg, metrics, verdict, why) + (f" Splice: {describe(damage)}." if damage else "")
    run.set_summary(summary)
    nxt = (f"Call intervene with fit_sae_run_id='{run.run_id}' and prompts to ablate/clamp/patch features and "
           "rank the most causal ones; read tables/top_examples.csv to interpret features."
           if verdict not in ("unusable", "destructive") else _refit_advice(request, metrics, cfg.d_sae))
    return FitSAEResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=[fig],
                        verdict=verdict,
                        site=cfg.site, d_in=cfg.d_in, d_sae=cfg.d_sae, architecture=cfg.architecture,
                        n_rows=len(ds), metrics=metrics, sae=sae_uri, examples=examples, next=nxt, damage=damage)


def saelens_cfg(export: Any, request: FitSAERequest, ds: TraceDataset) -> dict[str, Any]:
    """cfg.json of the SAELens export, with where the training states came from in its metadata."""
    return export.saelens_cfg() | {"metadata": export.saelens_cfg()["metadata"] | {
        "exclude_special_tokens": request.exclude_special, "neurotrace_capture_run_id": ds.run_id,
        "neurotrace_seed": request.seed}}


def _refit_advice(request: FitSAERequest, m: dict[str, Any], d_sae: int) -> str:
    """What to change for an unusable SAE: too few rows first, then only settings not already tried."""
    n = m["n_train_rows"]
    if n < d_sae:
        return (f"Refit before interpreting features: only {n} training rows for {d_sae} features: capture more "
                "prompts (a few thousand rows), or lower expansion_factor / d_sae.")
    tries = ["more steps (n_steps)"] + (["exclude_special=true"] if not request.exclude_special else []) \
        + (["normalize='expected_norm'"] if request.normalize != "expected_norm" else []) \
        + ["another k" if request.architecture == "topk" else "another l1_coefficient", "another expansion_factor",
           "more rows (capture more prompts)"]
    return "Refit before interpreting features: " + ", ".join(tries) + "."


def _summary(cfg: SAEConfig, m: dict[str, Any], verdict: str, why: list[str]) -> str:
    spliced = f", {m['ce_delta']:+.2f} nats spliced (CE loss score {m['ce_loss_score']:.2f})" \
        if m.get("ce_delta") is not None and m.get("ce_loss_score") is not None else ", not spliced"
    failing = f"; below the bar: {', '.join(why)}" if why else ""
    rows = f"{m['n_heldout_rows']} held-out rows" if m["n_heldout_rows"] else f"{m['n_train_rows']} training rows"
    return (f"SAE verdict {verdict}: {m['dead_fraction']:.0%} dead, explained variance {m['explained_variance']:.2f}"
            f"{spliced}{failing}. A {cfg.architecture} SAE ({cfg.d_in} -> {cfg.d_sae} features) on "
            f"{m['n_train_rows']} training rows of {cfg.site} ({m['n_excluded_rows']} position-0/special/massive-norm rows left "
            f"out, inputs scaled x{cfg.input_scale:.4g}): on {rows} L0 {m['l0']:.1f}, MSE {m['mse']:.3g}; dead = no "
            f"firing in the last {m['dead_feature_window']} training steps. Thresholds: {RULES}.")


def load_sae_run(lab: Lab, run_id: str, device: str | torch.device = "cpu", field: str = "fit_sae_run_id") -> SAE:
    """The SAE a fit_sae run saved."""
    manifest = lab.store.manifest(run_id)
    if manifest.tool != "fit_sae" or manifest.status != "complete":
        raise InputError(field, f"run {run_id} is a {manifest.status} {manifest.tool} run, not a complete fit_sae",
                         fix="pass the run_id a fit_sae call returned")
    cfg = SAEConfig.model_validate(lab.store.read_json(run_id, CONFIG_FILE))
    return from_tensors(cfg, lab.store.read_tensors(run_id, "sae.safetensors"), device)
