"""The key covariance ``C = E[k k^T]`` of an MLP's output projection, from a corpus; cached per model and layer.

ROME's update is least squares over the keys the layer sees in ordinary text, so it needs their uncentred
second moment (ROME: 100k Wikipedia samples). :func:`second_moments` accumulates ``sum k k^T`` over every
token of the corpus contexts for several layers in one pass (float64), and :func:`covariances` caches
each layer's estimate as safetensors under ``<runs>/cache/covariance/<model fingerprint>-<corpus>-<tokens>-
<seed>/layer<L>.safetensors`` (written to a temp file and renamed), so a second edit on the same model and
layer reads it back.

The corpus: a built-in corpus by name (``python-docs``, the default) or a .txt/.jsonl file from the input
directories, cut into BOS-led contexts of 128 tokens by :func:`neurotrace.lab.capture.corpus.token_contexts`
(seeded). A small ridge (1e-4 x the mean diagonal)
is added on use so the solve stays defined when the corpus has fewer tokens than ``d_mlp``.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from neurotrace.lab.capture import corpus_texts, forward_batches, token_contexts
from neurotrace.lab.editing.method.vectors import key_site
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter
from neurotrace.lab.runs import atomic_write_bytes

CONTEXT = 128        # tokens per corpus context
ROWS = 16            # contexts per forward
RIDGE = 1e-4


@torch.no_grad()
def second_moments(lm: LoadedModel, layers: Sequence[int], contexts: Tensor, reporter: Reporter
                   ) -> dict[int, Tensor]:
    """{layer: E[k k^T] (d_mlp, d_mlp) float64} over every token of ``contexts`` (n, pos); each forward stops
    after the deepest layer asked for (:func:`neurotrace.lab.capture.batched.forward_batches`)."""
    sites = {layer: key_site(layer) for layer in layers}
    sums = {layer: torch.zeros(lm.d_mlp, lm.d_mlp, dtype=torch.float64) for layer in layers}
    for _start, states in forward_batches(lm, contexts, list(sites.values()), ROWS, reporter):
        for layer, site in sites.items():
            k = states[site].reshape(-1, lm.d_mlp).to(torch.float64)             # (rows * pos, d_mlp)
            sums[layer] += k.T @ k
    return {layer: s / contexts.numel() for layer, s in sums.items()}


def corpus_contexts(lab: Lab, lm: LoadedModel, corpus: str, n_tokens: int, seed: int) -> Tensor:
    """(n, pos) BOS-led token contexts of ``corpus`` (:mod:`neurotrace.lab.capture.corpus`), about ``n_tokens``."""
    size = min(CONTEXT, lm.max_positions or CONTEXT)
    return token_contexts(lm.tokenizer, corpus_texts(lab, corpus), context_size=size,
                          max_tokens=max(n_tokens, size), seed=seed)


def cache_dir(lab: Lab, lm: LoadedModel, corpus: str, n_tokens: int, seed: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in corpus)[:40]
    return lab.store.root / "cache" / "covariance" / f"{lm.fingerprint}-{safe}-{n_tokens}-{seed}"


def covariances(lab: Lab, lm: LoadedModel, layers: Sequence[int], n_tokens: int, seed: int, corpus: str,
                reporter: Reporter) -> tuple[dict[int, Tensor], dict[str, str | int]]:
    """{layer: C + ridge} for each layer (read from the cache or estimated, then cached) and a description."""
    from safetensors.torch import load_file, save  # heavy import, kept off the package's import path

    where = cache_dir(lab, lm, corpus, n_tokens, seed)
    out: dict[int, Tensor] = {}
    missing = [layer for layer in layers if not (where / f"layer{layer}.safetensors").is_file()]
    for layer in layers:
        if layer not in missing:
            out[layer] = load_file(where / f"layer{layer}.safetensors")["cov"]
    cached = len(out)
    if missing:
        contexts = corpus_contexts(lab, lm, corpus, n_tokens, seed)
        moments = second_moments(lm, missing, contexts, reporter)
        for layer, c in moments.items():
            atomic_write_bytes(where / f"layer{layer}.safetensors", save({"cov": c.contiguous()}))
            out[layer] = c
    info: dict[str, str | int] = {"corpus": corpus, "tokens": n_tokens, "seed": seed,
                                  "cached_layers": cached, "estimated_layers": len(missing)}
    return {layer: with_ridge(c) for layer, c in out.items()}, info


def with_ridge(c: Tensor) -> Tensor:
    return c + RIDGE * c.diagonal().mean().clamp_min(1e-12) * torch.eye(c.shape[0], dtype=c.dtype)
