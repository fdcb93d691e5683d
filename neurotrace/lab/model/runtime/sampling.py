"""The one sampling union: how a generating tool picks the next token.

``{"kind": "greedy"}`` takes the argmax; ``{"kind": "sample", "temperature": 1.0, "top_k": 50}``
draws from the temperature-scaled distribution restricted to the ``top_k`` most likely tokens, with an
explicit generator seeded by the request's ``seed``. clamp_sweep and intervene share it.
"""

from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from neurotrace.lab.seeding import make_generator


class Greedy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["greedy"] = "greedy"


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["sample"] = "sample"
    temperature: float = Field(1.0, gt=0, description="Softmax temperature (1.0 = the model's distribution).")
    top_k: int | None = Field(50, ge=1, description="Sample only among the k most likely tokens; None = all.")


Sampling = Annotated[Greedy | Sample, Field(discriminator="kind")]
SAMPLING_HELP = ("{'kind': 'greedy'} (default) or {'kind': 'sample', 'temperature': 1.0, 'top_k': 50} "
                 "(seeded by `seed`).")


def token_chooser(sampling: Greedy | Sample, seed: int, device: torch.device | str) -> Callable[[Tensor], int] | None:
    """A function logits (vocab,) -> token id for one row, or None for greedy (callers take the argmax)."""
    if isinstance(sampling, Greedy):
        return None
    g = make_generator(seed, device)

    def choose(logits: Tensor) -> int:
        scaled = logits.float().to(g.device) / sampling.temperature
        if sampling.top_k is not None and sampling.top_k < scaled.shape[-1]:
            kth = scaled.topk(sampling.top_k).values[-1]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        return int(torch.multinomial(torch.softmax(scaled, -1), 1, generator=g))
    return choose
