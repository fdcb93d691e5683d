"""The noise of noise corruption: its unit, each fact's draw, and the hook that adds it.

A fact's numbers must not depend on the other facts of a request, so

* the **unit** is fixed per model: ``"embeddings"`` (default) is the std of what the token-embedding
  module outputs over the whole vocabulary, ``"dataset"`` is ROME's std over a dataset's subjects each
  tokenized alone, or an explicit number;
* the **draw** of each fact comes from a generator seeded with ``(seed, fact id)`` through a stable hash
  (blake2b, not Python's salted ``hash``). ``rome_compat`` instead uses ROME's draw: a fresh
  ``numpy.random.RandomState(1)`` for every fact, so facts with subjects of the same length share it.

Both units are measured on the *output of the embedding module* (``hook_embed``), which is where the
noise is added. Gemma's embedding module multiplies by sqrt(d_model) inside its forward, so measuring
the weight matrix would make the noise sqrt(d_model) times too small there; the module output is what
the model actually adds to, for every architecture.
"""

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from neurotrace.lab.facts import Fact
from neurotrace.lab.model.access.tokens import token_ids
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.seeding import make_generator
from neurotrace.lab.tracing.prepare import PreparedFact, fact_key


def subject_noise_std(lm: LoadedModel, facts: Sequence[PreparedFact]) -> float:
    """Std of the token embeddings of every subject token in ``facts`` (ROME's noise unit)."""
    emb = lm.adapter.module(lm.model, lm.adapter.embed)
    with torch.no_grad():
        rows = [emb(p.ids[p.subject[0]:p.subject[1]].to(lm.device)) for p in facts]
    return float(torch.cat(rows).float().std())


def noise_hook(noise_rows: Float[Tensor, "draw n_subject d_model"], subject: tuple[int, int],
               rows: Int[Tensor, " batch"] | None = None) -> Callable[..., Tensor]:
    """A hook_embed hook adding ``noise_rows`` (rows, n_subject, d_model) to the subject's embeddings; with
    ``rows``, batch row ``r`` gets draw ``noise_rows[rows[r]]`` (picked inside the hook, so a remote trace
    ships the distinct draws, not one copy per row)."""
    s, e = subject

    def add(act: Tensor, site: str) -> Tensor:
        out = act.clone()
        picked = noise_rows if rows is None else noise_rows[rows.to(noise_rows.device)]
        out[:, s:e] += picked.to(device=act.device, dtype=act.dtype)
        return out

    return add


VOCAB_CHUNK = 8192
ROME_SEED = 1


def fact_seed(seed: int, fact: Fact) -> int:
    """A 63-bit seed from ``(seed, fact id)``; the same on every machine and Python run."""
    digest = hashlib.blake2b(f"{seed}\x00{fact_key(fact)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _std_of(chunks) -> float:
    """Std of every element of the chunks (float64 sums; population std as torch's .std() over many)."""
    n, s, s2 = 0, 0.0, 0.0
    for x in chunks:
        x = x.double()
        n, s, s2 = n + x.numel(), s + float(x.sum()), s2 + float((x * x).sum())
    mean = s / n
    return float(np.sqrt(max(s2 / n - mean * mean, 0.0) * n / max(n - 1, 1)))


@torch.no_grad()
def embedding_std(lm: LoadedModel) -> float:
    """Std of the embedding module's output over every token id (scaled embeddings included)."""
    emb = lm.adapter.module(lm.model, lm.adapter.embed)
    vocab = int(emb.weight.shape[0]) if hasattr(emb, "weight") else int(lm.config.vocab_size)
    return _std_of(emb(torch.arange(a, min(a + VOCAB_CHUNK, vocab), device=lm.device)[None])[0].float()
                   for a in range(0, vocab, VOCAB_CHUNK))


@torch.no_grad()
def subjects_alone_std(lm: LoadedModel, subjects: Sequence[str]) -> float:
    """ROME's ``collect_embedding_std``: std of the embedding output of each subject tokenized alone."""
    emb = lm.adapter.module(lm.model, lm.adapter.embed)
    ids = [token_ids(lm.tokenizer, s) for s in dict.fromkeys(subjects)]
    return _std_of(emb(torch.tensor(i, device=lm.device)[None])[0].float() for i in ids if i)


def noise_draw(samples: int, prep: PreparedFact, d_model: int, unit: float, scale: float, *, seed: int,
         rome: bool) -> tuple[Float[Tensor, "sample n_subject d_model"], int | None]:
    """One fact's noise (samples, n_subject, d_model) and its seed (None for ROME's shared draw)."""
    n_subj = prep.subject[1] - prep.subject[0]
    if rome:
        raw = torch.from_numpy(np.random.RandomState(ROME_SEED).randn(samples, n_subj, d_model)).float()
        return raw * (scale * unit), None
    s = fact_seed(seed, prep.fact)
    return torch.randn((samples, n_subj, d_model), generator=make_generator(s)) * (scale * unit), s
