"""Sparse gradients for TopK training: only the ``k`` kept latents of each row cost anything backwards.

A TopK SAE's loss depends on the encoder and decoder only through the ``k`` latents each row keeps, so
the dense backward (two ``batch x d_in x d_sae`` matmuls for the encoder, two for the decoder) is
almost all multiplications by zero. Here the pre-activations are computed densely *without* autograd
(one matmul, needed to pick the top ``k``), and two autograd functions carry the rest on the kept
``(row, latent)`` pairs only:

* :class:`GatheredEncode` ``(x, W_enc, b_enc, idx) -> x @ W_enc[:, idx] + b_enc[idx]`` (batch, k): its
  backward is ``S @ W_enc.T`` for ``x`` and ``(S.T @ x).T`` for ``W_enc`` with ``S`` the sparse
  (batch, d_sae) matrix of the incoming gradients;
* :func:`sparse_decode` ``(vals, idx, W_dec) -> S_vals @ W_dec`` (batch, d_out) is ``embedding_bag``
  with per-sample weights, whose backward touches only the gathered rows.

The values and gradients are those of the dense computation (up to float summation order): the
dense path's gradient through ``topk`` is exactly zero off the kept entries. The same functions
serve AuxK's ``aux_k`` dead latents.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _sparse_rows(values: Tensor, idx: Tensor, n_cols: int) -> Tensor:
    """(batch, n_cols) sparse COO matrix with ``values[b, j]`` at ``(b, idx[b, j])``."""
    batch, k = idx.shape
    rows = torch.arange(batch, device=idx.device).repeat_interleave(k)
    return torch.sparse_coo_tensor(torch.stack([rows, idx.reshape(-1)]), values.reshape(-1), (batch, n_cols),
                                   is_coalesced=False, check_invariants=False)


class GatheredEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, W_enc: Tensor, b_enc: Tensor, idx: Tensor, pre: Tensor) -> Tensor:
        ctx.save_for_backward(x, W_enc, idx)
        return pre.gather(-1, idx)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, W_enc, idx = ctx.saved_tensors
        grad_x = F.embedding_bag(idx, W_enc.T.contiguous(), per_sample_weights=grad, mode="sum") \
            if ctx.needs_input_grad[0] else None                      # S @ W_enc.T
        grad_w = torch.sparse.mm(_sparse_rows(grad, idx, W_enc.shape[1]).t().coalesce(), x).T \
            if ctx.needs_input_grad[1] else None                      # (S.T @ x).T
        grad_b = torch.zeros(W_enc.shape[1], dtype=grad.dtype, device=grad.device).index_add_(
            0, idx.reshape(-1), grad.reshape(-1)) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None


def topk_latents(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """(values (batch, k) with autograd on the kept entries, their latent indices, the dense pre-activations
    (no autograd)) of ``x @ W_enc + b_enc``."""
    with torch.no_grad():
        pre = torch.addmm(b_enc, x, W_enc)
        idx = pre.topk(k, dim=-1, sorted=False).indices
    return GatheredEncode.apply(x, W_enc, b_enc, idx, pre), idx, pre


def sparse_decode(vals: Tensor, idx: Tensor, W_dec: Tensor) -> Tensor:
    """``sum_j vals[:, j] * W_dec[idx[:, j]]`` (batch, d_out), autograd through ``embedding_bag`` (whose
    backward touches only the gathered rows)."""
    return F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")
