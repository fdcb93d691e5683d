"""Activations of a prompt set at chosen sites, one vector per prompt (or every position), for statistics.

find_neurons, probe and steer all ask the same thing of a model: "what is the activation at site S for
each of these prompts?", pooled per prompt:

* ``"last"``: the scored position: the last token for a causal LM, the mask token (else the last
  token) for a masked LM (:func:`neurotrace.lab.model.runtime.stepwise.prediction_position`);
* ``"mean"``: the mean over every token of the prompt;
* ``"all"``: every position, kept per prompt (for top-activating examples).

Exactness: prompts are grouped by token length and each group runs as one unpadded batch, so no
position ever sees padding and every number equals a batch-1 forward up to the floating-point
summation order of batched matrix products.
"""

from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.hooks import recording
from neurotrace.lab.model.runtime.stepwise import prediction_position
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import NULL_REPORTER, Reporter

Pool = Literal["last", "mean", "all"]


def tokenize_prompts(lm: LoadedModel, prompts: Sequence[str], field: str = "prompts",
                     extra_positions: int = 0) -> list[list[int]]:
    """Token ids of each prompt (with the model's special tokens); InputError(field) if empty or too long."""
    limit = lm.max_positions
    out = []
    for i, text in enumerate(prompts):
        ids = list(lm.tokenizer(text).input_ids)
        if not ids:
            raise InputError(field, f"{field}[{i}] tokenizes to nothing", fix="give it text")
        if limit and len(ids) + extra_positions > limit:
            raise InputError(field, f"{field}[{i}] has {len(ids)} tokens (+{extra_positions} generated); the model "
                             f"has {limit} positions", fix="shorten the prompt")
        out.append(ids)
    return out


@torch.no_grad()
def collect(lm: LoadedModel, ids: Sequence[Sequence[int]], sites: Sequence[str], pool: Pool,
            reporter: Reporter = NULL_REPORTER, batch_size: int = 32
            ) -> dict[str, Float[Tensor, "prompt width"] | list[Float[Tensor, "pos width"]]]:
    """``{site: (n_prompts, width)}`` float32 for ``last``/``mean``; ``{site: [(len_i, width), ...]}`` for ``all``.

    Runs under the caller's lease of ``lm`` (hooks are attached here, so hold ``lm.lock``).
    """
    by_len: dict[int, list[int]] = {}
    for i, seq in enumerate(ids):
        by_len.setdefault(len(seq), []).append(i)
    chunks = [rows[k:k + batch_size] for _, rows in sorted(by_len.items()) for k in range(0, len(rows), batch_size)]
    per_prompt: dict[str, list[Tensor | None]] = {s: [None] * len(ids) for s in sites}
    done = 0
    with recording(lm.model, lm.adapter, sites) as store:
        for rows in chunks:
            reporter.step(done, len(ids), f"forward over prompts {done + 1}-{done + len(rows)} of {len(ids)}")
            x = torch.tensor([list(ids[r]) for r in rows], dtype=torch.long, device=lm.device)  # (rows, pos)
            lm.model(input_ids=x, attention_mask=torch.ones_like(x))
            for site in sites:
                act = store[site].float()                                                    # (rows, pos, width)
                for j, r in enumerate(rows):
                    per_prompt[site][r] = _pooled(lm, ids[r], act[j], pool)
            done += len(rows)
    reporter.step(len(ids), len(ids), "activations recorded")
    if pool == "all":
        return {s: [t for t in v if t is not None] for s, v in per_prompt.items()}
    return {s: torch.stack([t for t in v if t is not None]) for s, v in per_prompt.items()}


def _pooled(lm: LoadedModel, ids: Sequence[int], act: Float[Tensor, "pos width"], pool: Pool
            ) -> Float[Tensor, "pos width"] | Float[Tensor, " width"]:
    if pool == "last":
        return act[prediction_position(lm, ids)].cpu()
    if pool == "mean":
        return act.mean(0).cpu()
    return act.cpu()
