"""What differs between two sides on one input: residuals, lens, outputs, attention.

One forward per side records the residual stream after 0..n_layers blocks (the logit lens's rows,
:func:`neurotrace.lab.lens.lens.row_sites`), the output logits and (eager) attention patterns. Then,
per input:

* residual: per row, mean cosine and mean relative change ``|b - a| / |a|`` over tokens; the token
  matrices are kept for linear CKA over all inputs (:func:`linear_cka`, Kornblith et al. 2019:
  ``|Y'X|_F^2 / (|X'X|_F |Y'Y|_F)`` on centred ``X, Y``);
* logit lens: per row, KL(base lens || tuned lens) at the last token (the full vocabulary at every row
  and token would be the costliest part by far; the last token is what the prompt predicts);
* output: KL(base || tuned) of the next-token distribution at every token;
* attention: per (layer, head), the mean total-variation distance between the two rows of each query.

The BOS position is left out of the residual measures (its norm is an attention sink's, far above every
other token's, and it carries nothing about the input).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from neurotrace.lab.attention import eager_attention
from neurotrace.lab.lens import read_out, row_sites
from neurotrace.lab.model.access.hooks import recording
from neurotrace.lab.model.weights.loading import LoadedModel


@dataclass
class SideStates:
    rows: Tensor            # (rows, pos, d) residual after 0..n_layers blocks
    logprobs: Tensor        # (pos, vocab) log-softmax of the output
    attention: Tensor | None  # (layers, heads, q, k)
    site: Tensor | None = None  # (pos, width) states at the dictionary's site, if one was asked for


@torch.no_grad()
def forward(lm: LoadedModel, ids: Tensor, attention: bool, site: str | None = None) -> SideStates:
    sites = row_sites(lm.n_layers)
    x = ids[None].to(lm.device)
    with recording(lm.model, lm.adapter, sites + ([site] if site and site not in sites else [])) as store:
        if attention:
            with eager_attention(lm):
                out = lm.model(input_ids=x, attention_mask=torch.ones_like(x), output_attentions=True)
        else:
            out = lm.model(input_ids=x, attention_mask=torch.ones_like(x))
        rows = torch.stack([store[s][0] for s in sites]).float().cpu()
        at_site = store[site][0].float().cpu() if site else None
    att = None
    if attention and out.attentions and out.attentions[0] is not None:
        att = torch.stack([a[0] for a in out.attentions]).float().cpu()
    return SideStates(rows=rows, logprobs=torch.log_softmax(out.logits[0].float(), -1).cpu(), attention=att,
                      site=at_site)


def kl(lp_a: Tensor, lp_b: Tensor) -> Tensor:
    """KL(a || b) over the last dim from log-probabilities, clamped at 0 (rounding)."""
    return (lp_a.exp() * (lp_a - lp_b)).sum(-1).clamp_min(0.0)


@dataclass
class InputMeasures:
    cosine: Tensor          # (rows,)
    rel_change: Tensor      # (rows,)
    lens_kl: Tensor         # (rows,)
    kl_tokens: Tensor       # (pos,)
    head_tv: Tensor | None  # (layers, heads)


@torch.no_grad()
def lens_logprobs(lm: LoadedModel, side: SideStates) -> Tensor:
    """(rows, vocab) logit-lens log-probabilities at the last token (one read-out, shared by both comparisons)."""
    return torch.log_softmax(read_out(lm, side.rows[:, -1]), -1)


@torch.no_grad()
def compare(lm_a: LoadedModel, lm_b: LoadedModel, a: SideStates, b: SideStates, skip_first: bool,
            lens_a: Tensor | None = None) -> InputMeasures:
    """The measures of one input between sides ``a`` (base, read by ``lm_a``'s lens; ``lens_a`` if already
    read out) and ``b`` (tuned)."""
    start = 1 if skip_first and a.rows.shape[1] > 1 else 0
    ra, rb = a.rows[:, start:], b.rows[:, start:]
    cos = torch.nn.functional.cosine_similarity(ra, rb, dim=-1).mean(-1)
    rel = ((rb - ra).norm(dim=-1) / ra.norm(dim=-1).clamp_min(1e-8)).mean(-1)
    lens = kl(lens_logprobs(lm_a, a) if lens_a is None else lens_a, lens_logprobs(lm_b, b))
    tv = None
    if a.attention is not None and b.attention is not None:
        tv = 0.5 * (a.attention - b.attention).abs().sum(-1).mean(-1)
    return InputMeasures(cosine=cos, rel_change=rel, lens_kl=lens.cpu(), kl_tokens=kl(a.logprobs, b.logprobs),
                         head_tv=tv)


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of (n, d) matrices (rows = tokens); 1.0 for identical representations. With fewer tokens
    than dimensions the same numbers come from the (n, n) Gram matrices: ``|Y'X|_F^2 = <XX', YY'>_F`` and
    ``|X'X|_F = |XX'|_F`` (n^2 d work instead of n d^2)."""
    x = (x - x.mean(0)).double()
    y = (y - y.mean(0)).double()
    if x.shape[0] < x.shape[1]:
        kx, ky = x @ x.T, y @ y.T
        num, den = (kx * ky).sum(), kx.norm() * ky.norm()
    else:
        num = (y.T @ x).norm() ** 2
        den = (x.T @ x).norm() * (y.T @ y).norm()
    return float(num / den) if float(den) > 0 else 1.0
