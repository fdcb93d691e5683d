"""Two-group statistics for every neuron at once: effect size, permutation p-values, multiple comparisons.

For activations ``X`` (n prompts, m neurons) split into group A (the first ``n_a`` rows: concept, or
collapsed) and group B (the rest: control, or healthy):

* ``diff = mean_A - mean_B`` per neuron;
* Cohen's d ``= diff / s_pooled`` with ``s_pooled = sqrt(((n_a-1) s_A^2 + (n_b-1) s_B^2) / (n_a+n_b-2))``
  (sample variances; ``s_pooled`` is floored at ``SD_FLOOR`` so a neuron constant within both groups
  but different between them gets a very large, finite d);
* a two-sided permutation p-value: the group labels are shuffled ``n_permutations`` times with a seeded
  generator (the same shuffles for every neuron), and ``p = (1 + #{|diff_perm| >= |diff|}) / (1 + P)``
  (never 0; with few prompts the smallest attainable p is about ``1 / C(n, n_a)``);
* Bonferroni ``min(1, p * m)`` and Benjamini-Hochberg q-values over the ``m`` neurons tested.

Ranking uses a *moderated* d, ``diff / (s_pooled + s0)`` with ``s0 = MODERATION * median(s_pooled)`` over the
neurons tested (the fudge factor of SAM, Tusher et al. 2001): a nearly constant neuron whose tiny but
consistent difference gives a huge plain d (a GELU neuron stuck near its floor) does not outrank a
neuron that moves by a typical activation's worth.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.seeding import make_generator

SD_FLOOR = 1e-6
MODERATION = 0.05
CHUNK_ELEMENTS = 1 << 22   # permutations x neurons per matmul chunk


@dataclass
class Contrast:
    mean_a: Tensor        # (m,)
    mean_b: Tensor        # (m,)
    diff: Tensor          # (m,)
    cohens_d: Tensor      # (m,)
    moderated_d: Tensor   # (m,) the ranking key
    p_value: Tensor       # (m,)
    p_bonferroni: Tensor  # (m,)
    q_bh: Tensor          # (m,)


def pooled_sd(a: Tensor, b: Tensor) -> Tensor:
    """Pooled sample SD per column of ``a`` (n_a, m) and ``b`` (n_b, m)."""
    n_a, n_b = a.shape[0], b.shape[0]
    var_a = a.var(0, unbiased=True) if n_a > 1 else torch.zeros(a.shape[1], dtype=a.dtype)
    var_b = b.var(0, unbiased=True) if n_b > 1 else torch.zeros(b.shape[1], dtype=b.dtype)
    dof = max(n_a + n_b - 2, 1)
    return (((n_a - 1) * var_a + (n_b - 1) * var_b) / dof).sqrt()


def cohens_d(a: Tensor, b: Tensor) -> Tensor:
    """Cohen's d per column of ``a`` (n_a, m) vs ``b`` (n_b, m), pooled sample SD floored at SD_FLOOR."""
    return (a.mean(0) - b.mean(0)) / pooled_sd(a, b).clamp(min=SD_FLOOR)


def permutation_p(x: Tensor, n_a: int, n_permutations: int, seed: int,
                  reporter: Reporter = NULL_REPORTER) -> Tensor:
    """Two-sided permutation p-value of the mean difference, per column of ``x`` (n, m)."""
    x = x.double()
    n, m = x.shape
    total = x.sum(0)                                                     # (m,)
    observed = (x[:n_a].mean(0) - x[n_a:].mean(0)).abs()
    tol = 1e-9 * (observed.abs() + 1e-12)
    g = make_generator(seed)
    exceed = torch.zeros(m, dtype=torch.long)
    chunk = max(1, min(n_permutations, CHUNK_ELEMENTS // max(m, 1)))
    for start in range(0, n_permutations, chunk):
        reporter.step(start, n_permutations, f"permutations {start + 1}-{min(start + chunk, n_permutations)}")
        rows = min(chunk, n_permutations - start)
        order = torch.rand(rows, n, generator=g).argsort(1)             # (rows, n): a random permutation each
        member = torch.zeros(rows, n, dtype=torch.float64)
        member.scatter_(1, order[:, :n_a], 1.0)                         # 1 where the row puts a prompt in A
        sum_a = member @ x                                               # (rows, m)
        diff = sum_a / n_a - (total - sum_a) / (n - n_a)
        exceed += (diff.abs() >= observed - tol).sum(0)
    return (1 + exceed).double() / (1 + n_permutations)


def benjamini_hochberg(p: Tensor) -> Tensor:
    """BH q-values (monotone, capped at 1) for p-values ``p`` (m,)."""
    m = p.numel()
    order = p.argsort()
    ranked = p[order] * m / torch.arange(1, m + 1, dtype=p.dtype)
    ranked = torch.flip(torch.cummin(torch.flip(ranked, [0]), 0).values, [0]).clamp(max=1.0)
    q = torch.empty_like(p)
    q[order] = ranked
    return q


def contrast(x: Tensor, n_a: int, n_permutations: int, seed: int, reporter: Reporter = NULL_REPORTER) -> Contrast:
    """Every statistic of the module docstring for ``x`` (n, m), group A = rows ``:n_a``."""
    a, b = x[:n_a].double(), x[n_a:].double()
    p = permutation_p(x, n_a, n_permutations, seed, reporter)
    sd = pooled_sd(a, b)
    s0 = MODERATION * float(sd.median()) + SD_FLOOR
    diff = a.mean(0) - b.mean(0)
    return Contrast(mean_a=a.mean(0), mean_b=b.mean(0), diff=diff, cohens_d=cohens_d(a, b), moderated_d=diff / (sd + s0),
                    p_value=p, p_bonferroni=(p * p.numel()).clamp(max=1.0), q_bh=benjamini_hochberg(p))


def rank(c: Contrast) -> Tensor:
    """Neuron order: largest |moderated d| first, ties by smaller p."""
    key = torch.stack([-c.moderated_d.abs(), c.p_value], 1)
    order = torch.arange(key.shape[0])
    order = order[key[:, 1].argsort(stable=True)]
    return order[key[order, 0].argsort(stable=True)]
