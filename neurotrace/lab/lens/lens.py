"""The logit lens and a tuned-lens-style translator.

*Logit lens* (nostalgebraist 2020): the residual stream after ``r`` blocks, ``x_r`` (row 0 is the
embedding, the last row the final residual), is read as if it were final: ``head(final_norm(x_r))``,
the norm recomputing its statistics on ``x_r`` (TransformerLens ``logit_lens`` / ``apply_ln_to_stack``
with ``recompute_ln=True``). The last row is the model's own output, exactly.

*Tuned lens* (Belrose et al. 2023) learns an affine translator per row. Here it is fitted in closed
form: ``T_r(x) = x + W x + b`` with ``W, b`` from ridge least squares of ``x_final - x_r`` on ``x_r``
(the ridge penalises ``W`` only, so a large ridge returns the logit lens). KL(final || lens) is
measured on a seeded held-out split of the fitting states.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.hooks import recording
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.seeding import make_generator


def row_sites(n_layers: int) -> list[str]:
    """resid_pre of every block, then resid_post of the last: the residual after 0..n_layers blocks."""
    return [site_name("resid_pre", layer) for layer in range(n_layers)] + [site_name("resid_post", n_layers - 1)]


@torch.no_grad()
def residual_rows(lm: LoadedModel, ids: Tensor) -> Tensor:
    """(rows, pos, d_model) residual stream of one prompt ``ids`` (pos,) after 0..n_layers blocks."""
    sites = row_sites(lm.n_layers)
    with recording(lm.model, lm.adapter, sites) as store:
        lm.model(input_ids=ids[None].to(lm.device))
        rows = [store[s][0] for s in sites]
    return torch.stack(rows).float()


@torch.no_grad()
def read_out(lm: LoadedModel, states: Tensor) -> Tensor:
    """Logits of ``states`` (..., d_model) through the final norm (if any) and the LM head."""
    param = next(lm.model.parameters())
    x = states.to(device=param.device, dtype=param.dtype)
    if lm.adapter.final_norm:
        x = lm.adapter.module(lm.model, lm.adapter.final_norm)(x)
    return lm.adapter.logits_at(lm.model, x).float()


def kl_to_final(final_logits: Tensor, logits: Tensor) -> Tensor:
    """Mean KL(p_final || p) in nats over the leading dims."""
    lp_final = torch.log_softmax(final_logits, -1)
    lp = torch.log_softmax(logits, -1)
    return (lp_final.exp() * (lp_final - lp)).sum(-1).mean()


def fit_translator(x: Tensor, y: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    """(W, b) minimising |x + x W + b - y|^2 + ridge |W|^2 over rows of ``x``, ``y`` (n, d)."""
    n, d = x.shape
    xa = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1).double()   # (n, d + 1)
    penalty = torch.eye(d + 1, dtype=torch.float64) * ridge
    penalty[d, d] = 0.0                                                 # the bias is not penalised
    sol = torch.linalg.lstsq(xa.T @ xa + penalty + 1e-8 * torch.eye(d + 1, dtype=torch.float64),
                             xa.T @ (y - x).double()).solution          # (d + 1, d)
    return sol[:d].float(), sol[d].float()


def translate(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    return x + x @ w + b


def split(n: int, holdout: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded (train, held-out) index split of ``n`` states; at least one state on each side."""
    perm = torch.randperm(n, generator=make_generator(seed))
    k = min(n - 1, max(1, round(n * holdout)))
    return perm[k:], perm[:k]


def fit_all(lm: LoadedModel, states: Sequence[Tensor], holdout: float, ridge: float, seed: int):
    """Translators per row from ``states`` [(rows, pos, d)] and the held-out KL of both lenses per row."""
    x = torch.cat(list(states), 1)                                      # (rows, N, d)
    train, held = split(x.shape[1], holdout, seed)
    final = x[-1]
    final_logits = read_out(lm, final[held])
    translators, kl_lens, kl_tuned = [], [], []
    for r in range(x.shape[0]):
        w, b = fit_translator(x[r, train], final[train], ridge)
        translators.append((w, b))
        kl_lens.append(float(kl_to_final(final_logits, read_out(lm, x[r, held]))))
        kl_tuned.append(float(kl_to_final(final_logits, read_out(lm, translate(x[r, held], w, b)))))
    return translators, kl_lens, kl_tuned, len(train), len(held)
