"""How good is a fitted SAE? Reconstruction, sparsity, dead features, downstream effect, examples.

The names and definitions follow SAELens (``sae_lens/evals.py``), so numbers can be compared:

* **Reconstruction** over the held-out rows (BOS, position 0 and special tokens excluded by default,
  as SAELens' ``exclude_special_tokens``), in model units: ``explained_variance`` =
  ``1 - E||h - h_hat||^2 / (E||h||^2 - ||E h||^2)`` (SAELens' corrected formula), ``fvu = 1 -
  explained_variance``, and ``mse``, the mean squared error per element.
* **Sparsity**: ``l0``, the mean number of active features per row; ``dead_fraction``, the share of
  features that did not fire in the last ``dead_feature_window`` training steps (SAELens'
  ``dead_features`` over ``d_sae``); ``dead_fraction_heldout``, the share never active on a held-out row.
* **Downstream** (:func:`splice_metrics`): the model is re-run on the captured steps with the site's
  activation replaced by the SAE's reconstruction at every included position (SAELens keeps the
  original activation at ignored tokens); each step is one forward over a batch of three copies
  (clean, spliced, zeroed). For causal LMs ``ce_clean`` /
  ``ce_spliced`` / ``ce_zero`` are the next-token cross-entropies over the recorded tokens with the site
  untouched, reconstructed, and zeroed; ``loss_recovered = (ce_zero - ce_spliced) / (ce_zero - ce_clean)``
  (1 = the SAE loses nothing). ``kl_spliced`` is the mean KL(clean || spliced) of the output
  distributions per position, and steps with a ``target`` give the mean ``p_target`` both ways.
* **Top-activating examples**: for every feature, the rows where it is largest, with the token and
  its preceding context, so a person can read what the feature responds to.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from neurotrace.lab.effects import Damage, NeutralSet, judge
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.runtime.stepwise import prediction_position
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.sae.architectures.base import SAE
from neurotrace.lab.sae.train import RowSource


@dataclass
class ReconStats:
    mse: float
    fvu: float
    l0: float
    dead_fraction: float
    explained_variance: float
    fire_counts: np.ndarray             # (d_sae,)
    top_values: np.ndarray              # (d_sae, n_examples), descending; 0 where fewer active rows
    top_rows: np.ndarray                # (d_sae, n_examples); -1 where empty
    n_rows: int = 0


@torch.no_grad()
def reconstruction_stats(sae: SAE, source: RowSource, n_examples: int, batch_size: int = 4096,
                         on_batch: Callable[[int, int], None] | None = None,
                         target: RowSource | None = None) -> ReconStats:
    """One pass over every row: errors, variance, L0, fire counts, running top-k rows per feature
    (``target``: a transcoder's output rows, which the errors and variance are of)."""
    d_sae, n = sae.cfg.d_sae, source.n
    mean = (target or source).mean(limit=n).double()
    sq_err = total_var = l0 = 0.0
    fires = torch.zeros(d_sae, dtype=torch.long)
    top_v = torch.zeros(d_sae, n_examples)
    top_r = torch.full((d_sae, n_examples), -1, dtype=torch.long)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        h = source.rows(idx)
        y = target.rows(idx) if target is not None else h
        a = sae.encode(h)                                                    # (batch, d_sae)
        out = sae.decode(a) + (sae.skip_term(h) / sae.output_scale if sae.cfg.skip else 0.0)
        sq_err += float((out - y).double().pow(2).sum())
        total_var += float((y.double() - mean).pow(2).sum())
        active = a > 0
        l0 += float(active.sum())
        fires += active.sum(0).cpu()
        vals = torch.cat([top_v, a.T.cpu()], dim=1)                         # (d_sae, k + batch)
        rows = torch.cat([top_r, idx[None, :].expand(d_sae, -1)], dim=1)
        top_v, pick = vals.topk(n_examples, dim=1)
        top_r = rows.gather(1, pick)
        if on_batch is not None:
            on_batch(start, n)
    top_r = torch.where(top_v > 0, top_r, torch.full_like(top_r, -1))
    n = max(n, 1)
    fvu = sq_err / max(total_var, 1e-30)
    return ReconStats(mse=sq_err / (n * sae.d_out), fvu=fvu, explained_variance=1 - fvu, l0=l0 / n,
                      dead_fraction=float((fires == 0).float().mean()), fire_counts=fires.numpy(),
                      top_values=top_v.numpy(), top_rows=top_r.numpy(), n_rows=source.n)


CONDITIONS = ("clean", "spliced", "zero")


def _conditions(sae: SAE, site: str, keep: Tensor | None = None,
                max_norm: float | None = None) -> dict[str, Callable[..., Tensor]]:
    """Hooks that, on a batch of three copies of one sequence, leave copy 0 (clean), replace copy 1 by the
    SAE's reconstruction (spliced) and copy 2 by zeros, except at positions where ``keep`` (pos,) is True
    or whose input norm exceeds ``max_norm`` (massive activations, left out of training too).
    A transcoder reads its input at ``site`` and replaces its output site."""
    seen: dict[str, Tensor] = {}

    def replace(act: Tensor, site: str) -> Tensor:
        src = seen.get("in", act)
        new = torch.stack([act[0], sae(src[1]).to(act.dtype), torch.zeros_like(act[2])])
        kept = keep.to(act.device) if keep is not None else None
        if max_norm is not None:
            massive = src[1].float().norm(dim=-1) > max_norm
            kept = massive if kept is None else kept | massive
        return new if kept is None else torch.where(kept[None, :, None], act, new)

    if not sae.transcoder:
        return {site: replace}

    def record(act: Tensor, site: str) -> Tensor:
        seen["in"] = act
        return act
    return {site: record, sae.cfg.out_site: replace}


@torch.no_grad()
def _logits(lm: LoadedModel, ids: list[int], hooks: dict[str, Callable[..., Tensor]]) -> dict[str, Tensor]:
    """The three conditions' logits (pos, vocab) from one forward over a batch of three copies of ``ids``."""
    x = torch.tensor([ids] * len(CONDITIONS), dtype=torch.long, device=lm.device)
    with hooked(lm.model, lm.adapter, hooks):
        logits = lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits.float().cpu()
    return dict(zip(CONDITIONS, logits, strict=True))


def _ce(logits: Tensor, ids: list[int]) -> float:
    target = torch.tensor(ids[1:], dtype=torch.long)
    return float(torch.nn.functional.cross_entropy(logits[:-1], target, reduction="sum"))


def splice_metrics(lm: LoadedModel, sae: SAE, site: str, steps: list[dict], target_id: Callable[[str], int],
                   excluded: Callable[[list[int]], Tensor] | None = None,
                   max_norm: float | None = None) -> dict[str, float | int | None]:
    """Downstream effect of replacing ``site`` by the SAE reconstruction (see the module docstring);
    ``excluded(ids)`` (pos,) bool marks positions left unspliced (and unzeroed), and so does an input norm
    above ``max_norm``."""
    ce = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
    kl_sum, n_pos, n_tok = 0.0, 0, 0
    p_t: dict[str, list[float]] = {"clean": [], "spliced": []}
    for step in steps:
        ids = list(step["token_ids"])
        keep = excluded(ids) if excluded is not None else None
        logits = _logits(lm, ids, _conditions(sae, site, keep, max_norm))
        if lm.lm_kind == "causal" and len(ids) > 1:
            n_tok += len(ids) - 1
            for name in CONDITIONS:
                ce[name] += _ce(logits[name], ids)
        logp = {k: torch.log_softmax(v, -1) for k, v in logits.items()}
        kl_sum += float((logp["clean"].exp() * (logp["clean"] - logp["spliced"])).sum())
        n_pos += len(ids)
        if step.get("target"):
            pos = prediction_position(lm, ids[:step["prompt_len"]])
            for name in p_t:
                p_t[name].append(float(logp[name][pos, target_id(step["target"])].exp()))
    out: dict[str, float | int | None] = {"splice_steps": len(steps), "kl_spliced": kl_sum / max(n_pos, 1)}
    if n_tok:
        c = {k: v / n_tok for k, v in ce.items()}
        gap = c["zero"] - c["clean"]
        recovered = (c["zero"] - c["spliced"]) / gap if abs(gap) > 1e-12 else None
        out.update(ce_clean=c["clean"], ce_spliced=c["spliced"], ce_zero=c["zero"],
                   ce_delta=c["spliced"] - c["clean"], loss_recovered=recovered,
                   ce_loss_without_sae=c["clean"], ce_loss_with_sae=c["spliced"], ce_loss_with_ablation=c["zero"],
                   ce_loss_score=recovered)
    out["kl_div_with_sae"] = out["kl_spliced"]
    if p_t["clean"]:
        out.update(p_target_clean=float(np.mean(p_t["clean"])), p_target_spliced=float(np.mean(p_t["spliced"])),
                   p_target_delta=float(np.mean(p_t["spliced"]) - np.mean(p_t["clean"])))
    return out


def splice_damage(lm: LoadedModel, sae: SAE, site: str, steps: list[dict],
                  excluded: Callable[[list[int]], Tensor] | None = None, max_norm: float | None = None) -> Damage:
    """The shared destructive-edit check (:mod:`neurotrace.lab.effects`) of splicing the reconstruction in:
    KL, loss change and top-1 changes on neutral text (the steps' prefixes and plain sentences); positions
    left unspliced as in :func:`splice_metrics`."""
    def edit_for(ids):
        keep = excluded(list(ids)) if excluded is not None else None
        seen: dict[str, Tensor] = {}

        def replace(act: Tensor, site: str) -> Tensor:
            src = seen.get("in", act)
            new = sae(src).to(act.dtype)
            kept = None if keep is None else keep.to(act.device)[None, :]
            if max_norm is not None:
                massive = src.float().norm(dim=-1) > max_norm
                kept = massive if kept is None else kept | massive
            return new if kept is None else torch.where(kept[..., None], act, new)

        def record(act: Tensor, site: str) -> Tensor:
            seen["in"] = act
            return act
        return hooked(lm.model, lm.adapter, {site: record, sae.cfg.out_site: replace} if sae.transcoder
                      else {site: replace})

    neutral = NeutralSet(lm, [list(step["token_ids"]) for step in steps])
    with torch.no_grad():
        return judge(neutral.measure(edit_for))


def fire_rate_histogram(fire_counts: np.ndarray, n_rows: int, bins: int = 30) -> tuple[int, list[dict]]:
    """(features that never fired, log10 firing-rate bins of the rest: [{lo, hi, n_features}])."""
    counts = np.asarray(fire_counts)
    fired = counts[counts > 0]
    n = max(int(n_rows), 1)
    lo = float(np.log10(1 / n)) if n > 1 else -1.0
    hist, edges = np.histogram(np.log10(fired / n), bins=bins, range=(lo, 0.0))
    return int((counts == 0).sum()), [{"lo": float(a), "hi": float(b), "n_features": int(c)}
                                      for a, b, c in zip(edges[:-1], edges[1:], hist, strict=True)]
