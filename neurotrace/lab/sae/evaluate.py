"""How good is a fitted SAE? Reconstruction, sparsity, dead features, downstream effect, examples.

* **Reconstruction** over every captured row: ``mse`` (mean squared error per element) and ``fvu``,
  the fraction of variance unexplained ``sum ||h - h_hat||^2 / sum ||h - mean(h)||^2`` (0 = perfect,
  1 = no better than predicting the mean).
* **Sparsity**: ``l0``, the mean number of active features per row; ``dead_fraction``, the share of
  features never active on any row.
* **Downstream** (:func:`splice_metrics`): the model is re-run on the captured steps with the site's
  activation replaced by the SAE's reconstruction at every position. For causal LMs ``ce_clean`` /
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

from neurotrace.lab.model.loading import LoadedModel
from neurotrace.lab.model.sites import hooked_sites
from neurotrace.lab.model.stepwise import prediction_position
from neurotrace.lab.sae.base import SAE
from neurotrace.lab.sae.train import RowSource


@dataclass
class ReconStats:
    mse: float
    fvu: float
    l0: float
    dead_fraction: float
    fire_counts: np.ndarray             # (d_sae,)
    top_values: np.ndarray              # (d_sae, n_examples), descending; 0 where fewer active rows
    top_rows: np.ndarray                # (d_sae, n_examples); -1 where empty


@torch.no_grad()
def reconstruction_stats(sae: SAE, source: RowSource, n_examples: int, batch_size: int = 4096,
                         on_batch: Callable[[int, int], None] | None = None) -> ReconStats:
    """One pass over every row: errors, variance, L0, fire counts, running top-k rows per feature."""
    d_sae, n = sae.cfg.d_sae, source.n
    mean = source.mean(limit=n).double()
    sq_err = total_var = l0 = 0.0
    fires = torch.zeros(d_sae, dtype=torch.long)
    top_v = torch.zeros(d_sae, n_examples)
    top_r = torch.full((d_sae, n_examples), -1, dtype=torch.long)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        h = source.rows(idx)
        a = sae.encode(h)                                                    # (batch, d_sae)
        sq_err += float((sae.decode(a) - h).double().pow(2).sum())
        total_var += float((h.double() - mean).pow(2).sum())
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
    return ReconStats(mse=sq_err / (n * sae.cfg.d_in), fvu=sq_err / max(total_var, 1e-30), l0=l0 / n,
                      dead_fraction=float((fires == 0).float().mean()), fire_counts=fires.numpy(),
                      top_values=top_v.numpy(), top_rows=top_r.numpy())


def _replace(fn: Callable[[Tensor], Tensor]) -> Callable[..., Tensor]:
    def hook(act: Tensor, site: str) -> Tensor:
        return fn(act).to(act.dtype)
    return hook


@torch.no_grad()
def _logits(lm: LoadedModel, ids: list[int], hooks: dict) -> Tensor:
    x = torch.tensor([ids], dtype=torch.long, device=lm.device)
    with hooked_sites(lm, hooks):
        return lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float().cpu()


def _ce(logits: Tensor, ids: list[int]) -> float:
    target = torch.tensor(ids[1:], dtype=torch.long)
    return float(torch.nn.functional.cross_entropy(logits[:-1], target, reduction="sum"))


def splice_metrics(lm: LoadedModel, sae: SAE, site: str, steps: list[dict],
                   target_id: Callable[[str], int]) -> dict[str, float | int | None]:
    """Downstream effect of replacing ``site`` by the SAE reconstruction (see the module docstring)."""
    conds = {"clean": {}, "spliced": {site: _replace(lambda h: sae(h))},
             "zero": {site: _replace(torch.zeros_like)}}
    ce = dict.fromkeys(conds, 0.0)
    kl_sum, n_pos, n_tok = 0.0, 0, 0
    p_t: dict[str, list[float]] = {"clean": [], "spliced": []}
    for step in steps:
        ids = list(step["token_ids"])
        logits = {name: _logits(lm, ids, hooks) for name, hooks in conds.items()}
        if lm.kind == "causal" and len(ids) > 1:
            n_tok += len(ids) - 1
            for name in conds:
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
        out.update(ce_clean=c["clean"], ce_spliced=c["spliced"], ce_zero=c["zero"],
                   ce_delta=c["spliced"] - c["clean"],
                   loss_recovered=(c["zero"] - c["spliced"]) / gap if abs(gap) > 1e-12 else None)
    if p_t["clean"]:
        out.update(p_target_clean=float(np.mean(p_t["clean"])), p_target_spliced=float(np.mean(p_t["spliced"])),
                   p_target_delta=float(np.mean(p_t["spliced"]) - np.mean(p_t["clean"])))
    return out
