"""Collapse mode: generate greedily, flag collapsed outputs, and record the MLP activations that precede them.

Generation and the collapse rules are clamp_sweep's own (:mod:`neurotrace.lab.clamping.generation`,
:mod:`neurotrace.lab.effects.collapse`), so a prompt this mode calls collapsed is one clamp_sweep's
baseline calls collapsed. For each prompt the activation of every neuron is averaged over the last
prompt token (the prefill's newest position) and the first ``window`` generated tokens as they are
fed back (fewer if the row stopped at end-of-text): the positions where a loop starts.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from neurotrace.lab.clamping import (
    CollapseThresholds,
    Sampler,
    collapse_reasons,
    generate,
    left_pad,
    text_metrics,
)
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter


@dataclass
class Generations:
    texts: list[str]
    reasons: list[list[str]]               # empty = healthy
    acts: dict[int, Tensor]                # layer -> (n_prompts, d_mlp) pooled activation


def generate_and_record(lm: LoadedModel, ids: Sequence[Sequence[int]], layers: Sequence[int], *,
                        max_new_tokens: int, window: int, thresholds: CollapseThresholds, batch_size: int,
                        reporter: Reporter) -> Generations:
    """Greedy generations, their collapse reasons and the pooled activations (see the module docstring)."""
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    eos = tok.eos_token_id
    acts = {layer: torch.zeros(len(ids), lm.d_mlp, dtype=torch.float64) for layer in layers}
    texts: list[str] = [""] * len(ids)
    reasons: list[list[str]] = [[] for _ in ids]
    for b0 in range(0, len(ids), batch_size):
        reporter.step(b0, len(ids), f"generating for prompts {b0 + 1}-{min(b0 + batch_size, len(ids))}")
        rows = list(range(b0, min(b0 + batch_size, len(ids))))
        x, mask = left_pad([ids[r] for r in rows], pad)
        steps = {layer: torch.zeros(len(rows), window + 1, lm.d_mlp, dtype=torch.float64) for layer in layers}

        def observe(layer: int, step: int, before: Tensor, after: Tensor, steps: dict = steps) -> None:
            if layer in steps and step <= window:
                steps[layer][:, step] = after[:, -1].double().cpu()         # newest position of each row

        gen = generate(lm.model, lm.adapter, x, mask, max_new_tokens=max_new_tokens, sampler=Sampler(),
                       eos_token_id=eos, pad_token_id=pad, observe=observe, on_step=lambda _s: reporter.check())
        keep = torch.zeros(len(rows), window + 1, 1, dtype=torch.float64)   # (rows, step, 1): real positions
        for j, r in enumerate(rows):
            n = int(gen.lengths[j])
            keep[j, : min(window, max(n - 1, 0)) + 1] = 1.0   # step s >= 1 feeds generated token s
            content = gen.tokens[j, :n].tolist()
            if content and content[-1] == eos:
                content = content[:-1]
            texts[r] = tok.decode(content, skip_special_tokens=True)
            reasons[r] = collapse_reasons(text_metrics(content, texts[r]), thresholds)
        for layer in layers:
            acts[layer][rows] = (steps[layer] * keep).sum(1) / keep.sum(1)
    reporter.step(len(ids), len(ids), "generations scored")
    return Generations(texts, reasons, {k: v.float() for k, v in acts.items()})

