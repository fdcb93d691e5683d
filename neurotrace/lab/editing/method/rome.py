"""The closed-form weight updates of ROME and MEMIT, on an MLP's output projection.

The projection maps a key ``k`` (the MLP's hidden activation, ``d_mlp`` wide: ``mlp.hook_post``) to a
value ``W k + b`` (``d_model`` wide). Everything here works on ``W`` as ``(d_out, d_in)``; GPT-2's
``Conv1D`` stores ``(d_in, d_out)``, which :func:`weight_matrix` and :func:`native_delta` translate.

**ROME** (Meng et al. 2022, eq. 2). Given the key ``k*`` (averaged over prefix contexts), the value ``v*``
the projection should return for it, and the uncentred key covariance ``C = E[k k^T]`` over a corpus, the
minimal-change update (least squares over the corpus keys, subject to ``W' k* = v*``) is

    W' = W + Λ (C^{-1} k*)^T,    Λ = (v* - W k*) / ((C^{-1} k*)^T k*).

Proof of the constraint: ``W' k* = W k* + Λ (C^{-1} k*)^T k* = W k* + (v* - W k*) = v*``. With a bias,
``v*`` is the full output and ``W k*`` is taken with the bias, which is the same update.

**MEMIT** (Meng et al. 2023, eq. 14-16), at one layer of the range, for keys ``K`` (d_in, n), the residuals
``R`` (d_out, n) this layer must supply, and ``C0`` the corpus covariance scaled by ``λ``:

    ΔW = R K^T (λ C + K K^T)^{-1}.

The solves are done in float64. Both functions use the ``C`` they are given as it is; the covariance
module adds a small ridge to an estimate from a finite corpus.
"""

import torch
from jaxtyping import Float
from torch import Tensor, nn


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's Conv1D (weight stored as (d_in, d_out))."""
    return type(module).__name__ == "Conv1D"


def weight_matrix(module: nn.Module) -> Float[Tensor, "d_out d_in"]:
    """The projection's weight as (d_out, d_in), whatever its storage."""
    w = module.weight
    return w.t() if is_conv1d(module) else w


def native_delta(module: nn.Module, delta: Float[Tensor, "d_out d_in"]) -> Tensor:
    """``delta`` in the module's own weight layout."""
    return delta.t().contiguous() if is_conv1d(module) else delta


def rome_delta(w: Float[Tensor, "d_out d_in"], cov: Float[Tensor, "d_in d_in"], key: Float[Tensor, " d_in"],
               value: Float[Tensor, " d_out"], current: Float[Tensor, " d_out"] | None = None
               ) -> Float[Tensor, "d_out d_in"]:
    """ROME's rank-one update ``Λ (C^{-1} k)^T`` (see the module docstring). ``current`` is the projection's
    output for ``key`` (``W k + b``; default ``W k``)."""
    k = key.to(torch.float64)
    cinv_k = torch.linalg.solve(cov.to(torch.float64), k)                   # (d_in,)
    now = (w.to(torch.float64) @ k) if current is None else current.to(torch.float64)
    lam = (value.to(torch.float64) - now) / torch.dot(cinv_k, k)      # (d_out,)
    return torch.outer(lam, cinv_k).to(w.dtype)


def memit_delta(cov: Float[Tensor, "d_in d_in"], keys: Float[Tensor, "d_in n"], resid: Float[Tensor, "d_out n"],
                lam: float) -> Float[Tensor, "d_out d_in"]:
    """MEMIT's batch update at one layer: ``R K^T (λ C + K K^T)^{-1}``."""
    k = keys.to(torch.float64)
    a = lam * cov.to(torch.float64) + k @ k.T                               # (d_in, d_in), symmetric
    adj = torch.linalg.solve(a, k)                                     # (d_in, n) = A^{-1} K
    return (resid.to(torch.float64) @ adj.T).to(resid.dtype)           # R (A^{-1} K)^T = R K^T A^{-1}
