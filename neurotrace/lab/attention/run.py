"""attention: per-head patterns of a prompt, where the last position attends, and head-type scores."""

import re

import torch

from neurotrace.lab.attention.patterns import (
    attention_patterns,
    repeated_sequence,
    sequence_scores,
    subject_positions,
)
from neurotrace.lab.attention.report import write_report
from neurotrace.lab.attention.schema import AttentionRequest, AttentionResult
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.chat import apply_chat
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter

HEAD_RE = re.compile(r"^(\d+):(\d+|\*)$")
MAX_SHOWN = 16


def parse_heads(refs: list[str], n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """'L:H' / 'L:*' refs -> (layer, head) pairs in order, without repeats; InputError('heads[i]')."""
    out: list[tuple[int, int]] = []
    for i, ref in enumerate(refs):
        m = HEAD_RE.match(ref.strip())
        if not m:
            raise InputError(f"heads[{i}]", f"{ref!r} is not a head", fix="write 'layer:head' (e.g. '1:3') or 'L:*'")
        layer = int(m.group(1))
        heads = range(n_heads) if m.group(2) == "*" else [int(m.group(2))]
        if layer >= n_layers or any(h >= n_heads for h in heads):
            raise InputError(f"heads[{i}]", f"{ref!r} is out of range ({n_layers} layers x {n_heads} heads)",
                             fix=f"use layers 0..{n_layers - 1} and heads 0..{n_heads - 1}")
        out += [(layer, h) for h in heads if (layer, h) not in out]
    return out


def default_heads(scores: dict[str, torch.Tensor], limit: int = MAX_SHOWN) -> list[tuple[int, int]]:
    """Every head if there are few, else the heads with the highest best score of any kind."""
    best = torch.stack(list(scores.values())).amax(0)                  # (layers, heads)
    order = best.flatten().argsort(descending=True)[:limit].tolist()
    n_heads = best.shape[1]
    return sorted((i // n_heads, i % n_heads) for i in order)


def run_attention(request: AttentionRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> AttentionResult:
    """Which heads does the last token attend with, and which heads are previous-token, induction,
    duplicate-token or subject heads? Reads attention patterns from the model (eager attention)."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    with lab.cache.lease(ModelRef(model=request.model, device=request.device)) as lm:
        request = apply_chat(request, lm.tokenizer, request.model, single=("prompt",))
        ids = torch.tensor(list(lm.tokenizer(request.prompt).input_ids))
        if len(ids) == 0:
            raise InputError("prompt", "the prompt tokenizes to nothing", fix="give some text")
        reporter.step(0, 3, "patterns of the prompt")
        pattern = attention_patterns(lm, ids)                           # (layers, heads, q, k)
        reporter.step(1, 3, "patterns of a repeated random sequence")
        seq, offset = repeated_sequence(lm, request.induction_len, request.seed)
        scores = sequence_scores(attention_patterns(lm, seq), request.induction_len, offset)
        mask = getattr(lm.tokenizer, "mask_token_id", None) if lm.lm_kind == "masked" else None
        hits = (ids == mask).nonzero() if mask is not None else []
        pos = int(hits[0]) if len(hits) else len(ids) - 1                # the mask for masked LMs
        if request.subject is not None:
            subj = subject_positions(lm, request.prompt, request.subject)
            scores["subject"] = pattern[:, :, pos, subj].sum(-1)
        n_layers, n_heads = pattern.shape[:2]
        shown = parse_heads(request.heads, n_layers, n_heads) if request.heads else default_heads(scores)
        reporter.step(2, 3, "writing the run")
        with lab.store.open_run("attention", request, seed=request.seed) as run:
            run.add_model(request.model, lm.fingerprint, lm.provenance)
            return write_report(run, request, lm, ids, pattern, scores, shown[:MAX_SHOWN], "eager", pos)
