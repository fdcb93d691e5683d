"""Fitting an SAE on captured states, deterministically.

Every random choice comes from one explicit generator seeded by the request: the weight init first,
then one permutation of the rows per epoch (``torch.randperm``), from which consecutive batches of
``batch_size`` rows are taken (at most the number of rows: a larger batch would repeat none and only
cost time). Adam is PyTorch's fused kernel on CPU and CUDA (the per-tensor loop elsewhere), which is
deterministic on CPU, so the same seed, states and settings give bit-identical weights. States that fit in memory (``max_in_memory_bytes``) are loaded once;
larger ones are read batch by batch from the memory-mapped array (rows gathered in sorted order).
A source may cover a subset of the rows (``index``: the training or the held-out split).

Dead features follow SAELens: a counter per feature of optimizer steps since it last fired on a
batch; a feature whose counter reaches ``dead_feature_window`` is dead (and AuxK trains it, see
:mod:`neurotrace.lab.sae.architectures.topk`). With ``resample_dead`` (Bricken et al. 2023, "Towards
Monosemanticity"), every ``dead_feature_window`` steps during the first 80% of training each dead
feature is re-initialised on a row of the current batch drawn with probability proportional to its
squared reconstruction error: decoder row = that row's unit residual, encoder column = the same
direction times the mean encoder norm of the live features, bias 0, Adam moments zeroed; the draw
uses the training generator, so runs stay deterministic. ``warm_up_steps`` ramps the sparsity penalty
(``SAE.penalty_scale``) linearly from 0 to 1 (SAELens' ``l1_warm_up_steps``).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from neurotrace.lab.sae.architectures.base import SAE


@dataclass(frozen=True)
class TrainSettings:
    n_steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    dead_feature_window: int = 1000
    resample_dead: bool = True
    warm_up_steps: int = 0
    lr_warm_up_steps: int = 0
    lr_decay_steps: int = 0
    b_dec_init: str = "mean"
    max_in_memory_bytes: int = 2 << 30
    log_every: int = 50


class RowSource:
    """Batches of rows from an [N, D] array (``index`` picks the rows it covers): held as a float32 tensor
    when that is at most ``max_bytes`` and the array is not memory-mapped from disk (or ``stream`` is
    False), else streamed: each batch is gathered from the memory-mapped array and converted alone, so
    the states are never copied into memory as a whole. Every batch is taken in ascending row order on
    both paths, so a streamed fit and an in-memory fit see the same rows in the same order."""

    def __init__(self, states: np.ndarray, device: torch.device, max_bytes: int,
                 index: np.ndarray | None = None, stream: bool | None = None) -> None:
        self.index = np.arange(states.shape[0]) if index is None else np.asarray(index, dtype=np.int64)
        self.n = int(self.index.shape[0])
        self.device = device
        self.states = states
        self.tensor = None
        if stream is None:
            stream = isinstance(states, np.memmap) and self.n * states.shape[1] * 4 > (256 << 20)
        if not stream and self.n * states.shape[1] * 4 <= max_bytes:
            self.tensor = torch.from_numpy(np.array(states[self.index], dtype=np.float32)).to(device)

    @property
    def streaming(self) -> bool:
        return self.tensor is None

    def rows(self, idx: Tensor) -> Tensor:
        idx = idx.sort().values
        if self.tensor is not None:
            return self.tensor[idx.to(self.device)]
        rows = self.index[idx.numpy()]
        return torch.from_numpy(np.asarray(self.states[rows], dtype=np.float32)).to(self.device)

    def mean_norm(self, limit: int = 65536) -> float:
        """Mean L2 norm of (up to ``limit``) rows: the input of SAELens' norm scaling factor."""
        idx = torch.arange(min(self.n, limit))
        return float(self.rows(idx).double().norm(dim=1).mean())

    def mean(self, limit: int = 65536) -> Tensor:
        return self.rows(_spread(self.n, limit)).double().mean(0).float()

    def geometric_median(self, limit: int = 65536, iterations: int = 100) -> Tensor:
        """The point minimising the summed distances to (up to ``limit``) rows: Weiszfeld's iteration from the
        mean, stopped when it moves less than 1e-6 of its norm (SAELens' ``b_dec_init_method``)."""
        x = self.rows(_spread(self.n, limit)).double()
        m = x.mean(0)
        for _ in range(iterations):
            w = 1.0 / (x - m).norm(dim=1).clamp_min(1e-8)
            new = (w[:, None] * x).sum(0) / w.sum()
            done = float((new - m).norm()) <= 1e-6 * max(float(m.norm()), 1e-12)
            m = new
            if done:
                break
        return m.float()


def _spread(n: int, limit: int) -> Tensor:
    """Up to ``limit`` row positions spread evenly over ``0..n-1`` (all of them when n <= limit)."""
    return torch.arange(n) if n <= limit else torch.linspace(0, n - 1, limit).long()


def lr_factor(step: int, settings: TrainSettings) -> float:
    """SAELens' constant schedule with linear warm-up (from 0) over ``lr_warm_up_steps`` and linear decay to
    0 over the last ``lr_decay_steps``."""
    f = 1.0
    if settings.lr_warm_up_steps:
        f = min(f, (step + 1) / settings.lr_warm_up_steps)
    if settings.lr_decay_steps:
        f = min(f, (settings.n_steps - step) / settings.lr_decay_steps)
    return max(f, 0.0)


def batch_indices(n: int, batch_size: int, n_steps: int, generator: torch.Generator) -> Iterator[Tensor]:
    """``n_steps`` index batches: consecutive slices of one seeded permutation per epoch."""
    perm, cursor = torch.randperm(n, generator=generator), 0
    size = effective_batch_size(n, batch_size)
    for _ in range(n_steps):
        if cursor + size > n:
            perm, cursor = torch.randperm(n, generator=generator), 0
        yield perm[cursor:cursor + size]
        cursor += size


def initial_b_dec(sae: SAE, source: RowSource, target: RowSource | None, how: str) -> Tensor | None:
    """``b_dec`` at the data mean or geometric median (of the targets for a transcoder), scaled; or None (0)."""
    rows = target if target is not None else source
    if how == "zeros":
        return None
    centre = rows.geometric_median() if how == "geometric_median" else rows.mean()
    return centre * sae.output_scale


def train_sae(sae: SAE, source: RowSource, settings: TrainSettings, generator: torch.Generator,
              on_step: Callable[[int, int], None] | None = None, target: RowSource | None = None,
              check: Callable[[], None] | None = None) -> tuple[list[dict[str, float]], Tensor]:
    """Train in place; returns the loss log (every ``log_every`` steps and the last) and the steps since
    each feature last fired (d_sae,). ``target`` (same rows as ``source``) makes it a transcoder's fit;
    ``check`` runs before every step (the caller's cancellation check)."""
    sae.init_weights(generator, b_dec=initial_b_dec(sae, source, target, settings.b_dec_init))
    sae.train()
    opt = torch.optim.Adam(sae.parameters(), lr=settings.lr, **_fast_adam(sae.W_dec.device))
    log: list[dict[str, float]] = []
    last = settings.n_steps - 1
    since = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=sae.W_dec.device)
    for step, idx in enumerate(batch_indices(source.n, settings.batch_size, settings.n_steps, generator)):
        if check is not None:
            check()                                      # raises when the caller cancelled
        rows = source.rows(idx)
        y = target.rows(idx) if target is not None else None
        sae.penalty_scale = min(1.0, (step + 1) / settings.warm_up_steps) if settings.warm_up_steps else 1.0
        for group in opt.param_groups:
            group["lr"] = settings.lr * lr_factor(step, settings)
        dead = since >= settings.dead_feature_window
        loss, parts = sae.loss(rows, dead=dead) if y is None else sae.loss(rows, dead=dead, y=y)
        fired = parts.pop("fired")
        since = torch.where(fired, torch.zeros_like(since), since + 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sae.after_step()
        if settings.resample_dead and step and step % settings.dead_feature_window == 0 \
                and step < 0.8 * settings.n_steps:
            since = resample(sae, opt, rows, since, settings.dead_feature_window, generator, y)
        if step % settings.log_every == 0 or step == last:
            log.append({"step": step, "loss": float(loss.detach()), **{k: float(v) for k, v in parts.items()},
                        "dead_fraction": float((since >= settings.dead_feature_window).float().mean())})
            if on_step is not None:
                on_step(step, settings.n_steps)
    sae.penalty_scale = 1.0
    sae.eval()
    return log, since.cpu()


def effective_batch_size(n_rows: int, batch_size: int) -> int:
    """Rows per optimizer step: ``batch_size``, capped at the ``n_rows`` there are."""
    return max(1, min(batch_size, n_rows))


def _fast_adam(device: torch.device) -> dict[str, bool]:
    """Adam's fused kernel where PyTorch has one (CPU, CUDA): the same update, ~4x faster on CPU than
    the per-tensor loop; elsewhere the multi-tensor ``foreach`` path."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}


@torch.no_grad()
def resample(sae: SAE, opt: torch.optim.Optimizer, rows: Tensor, since: Tensor, window: int,
             generator: torch.Generator, y: Tensor | None = None) -> Tensor:
    """Re-initialise the dead features on high-error rows of ``rows`` (see the module docstring)."""
    dead = torch.nonzero(since >= window).flatten()
    if len(dead) == 0:
        return since
    _, err = sae.mse(rows, sae.encode(rows), y)                             # (batch, d_out), scaled units
    weight = err.pow(2).sum(-1).double().cpu() + 1e-12
    pick = torch.multinomial(weight, len(dead), replacement=True, generator=_cpu(generator))
    dirs = err[pick.to(err.device)]
    dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-12)          # (n_dead, d_out)
    alive = since < window
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    sae.W_dec[dead] = dirs * sae.W_dec[alive].norm(dim=1).mean() if alive.any() else dirs
    if sae.transcoder:                    # the encoder reads the input: point it at the same rows' inputs
        src = sae.centred(rows[pick.to(rows.device)])
        sae.W_enc[:, dead] = (src / src.norm(dim=1, keepdim=True).clamp_min(1e-12)).T * enc_norm
    else:
        sae.W_enc[:, dead] = dirs.T * enc_norm
    sae.b_enc[dead] = 0
    for param, index in ((sae.W_dec, (dead,)), (sae.W_enc, (slice(None), dead)), (sae.b_enc, (dead,))):
        for moment in ("exp_avg", "exp_avg_sq"):
            if moment in opt.state.get(param, {}):
                opt.state[param][moment][index] = 0
    out = since.clone()
    out[dead] = 0
    return out


def _cpu(generator: torch.Generator) -> torch.Generator:
    """``multinomial`` on CPU weights needs a CPU generator: derive one from ``generator``'s stream."""
    if generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)
