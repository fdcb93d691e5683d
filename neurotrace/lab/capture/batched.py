"""capture over a corpus: batched forwards over fixed token contexts that stop at the deepest captured layer.

Each batch of contexts ``[B, T]`` runs one forward with a recording hook per captured site. The hook of the
deepest site raises :class:`_Stop` once it has recorded, so no later layer, final norm or LM head runs (the same
effect as TransformerLens' ``stop_at_layer``). Cancellation is checked at every block up to that depth, so a
cancel lands within a batch, and progress is reported per batch. States leave the model already in the stored
dtype and go straight to the :class:`~neurotrace.lab.capture.store.StateWriter`, which flushes every
``chunk_rows`` rows to disk: a large capture never holds its states in memory.
"""

import re
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from neurotrace.lab.capture.corpus import corpus_texts, token_contexts
from neurotrace.lab.capture.schema import CaptureRequest
from neurotrace.lab.capture.store import StateWriter
from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import NULL_REPORTER, Reporter

_LAYER = re.compile(r"^blocks\.(\d+)\.")
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class _Stop(Exception):
    """Raised by the deepest site's hook: the rest of the forward is not needed."""


def site_depth(site: str) -> int:
    """The block a site belongs to (-1 for the embedding)."""
    m = _LAYER.match(site)
    return int(m.group(1)) if m else -1


def _stop_site(sites: list[str]) -> str:
    """The last site (forward order) of the deepest block among ``sites``."""
    deepest = max(site_depth(s) for s in sites)
    return [s for s in sites if site_depth(s) == deepest][-1]


@torch.no_grad()
def forward_batches(lm: LoadedModel, contexts: Tensor, sites: list[str], batch_size: int,
                    reporter: Reporter = NULL_REPORTER, dtype: torch.dtype = torch.float32,
                    stop_early: bool = True) -> Iterator[tuple[int, dict[str, Tensor]]]:
    """Yield ``(first context index, {site: [b, T, D] states in dtype on the CPU})`` per batch of contexts."""
    store: dict[str, Tensor] = {}
    stop = _stop_site(sites) if stop_early else None

    def record(act: Tensor, site: str) -> None:
        store[site] = act.detach().to("cpu", dtype)
        if site == stop:
            raise _Stop
        return None

    def check(_act: Tensor, site: str) -> None:
        reporter.check()
        return None

    hooks: dict[str, list[Callable[..., Any]]] = {}
    for layer in range(max(site_depth(s) for s in sites) + 1):
        hooks.setdefault(f"blocks.{layer}.hook_resid_pre", []).append(check)
    for s in sites:   # recording last: the stop site's recording hook runs after any check on the same module
        hooks.setdefault(s, []).append(record)
    kwargs: dict[str, Any] = {"use_cache": False} if lm.lm_kind == "causal" else {}
    n = contexts.shape[0]
    with hooked(lm.model, lm.adapter, hooks):
        for start in range(0, n, batch_size):
            reporter.step(start, n, f"forward over contexts {start + 1}-{min(n, start + batch_size)} of {n}")
            x = contexts[start:start + batch_size].to(lm.device)
            store.clear()
            try:
                lm.model(input_ids=x, attention_mask=torch.ones_like(x), **kwargs)
            except _Stop:
                pass
            yield start, {s: store[s] for s in sites}
    reporter.step(n, n, "states recorded")


class _TokenText:
    """Decoded text per token id, cached: a million rows decode each distinct id once."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, ids: list[int]) -> list[str]:
        out = []
        for t in ids:
            if t not in self.cache:
                self.cache[t] = self.tokenizer.decode([t])
            out.append(self.cache[t])
        return out


def check_corpus_request(request: CaptureRequest, lm: LoadedModel) -> None:
    if request.interventions:
        raise InputError("interventions", "a corpus capture records the model as it is",
                         fix="capture prompts or an episode to intervene per step")
    if request.max_new_tokens:
        raise InputError("max_new_tokens", "a corpus capture runs one forward per context and generates nothing",
                         fix="use max_new_tokens=0")
    if request.positions != "all":
        raise InputError("positions", "a corpus capture records every position of each context",
                         fix="use positions='all'")
    limit = lm.max_positions
    if limit and request.context_size > limit:
        raise InputError("context_size", f"context_size {request.context_size} exceeds the model's {limit} "
                         "positions", fix=f"use a context_size of at most {limit}")


def corpus_contexts(lab: Any, request: CaptureRequest, lm: LoadedModel) -> Tensor:
    """The request's corpus as ``[n, context_size]`` token ids, every input checked (before a run is opened)."""
    check_corpus_request(request, lm)
    texts = corpus_texts(lab, request.corpus or "")
    return token_contexts(lm.tokenizer, texts, request.context_size, request.max_tokens, request.seed,
                          request.prepend_bos)


def capture_corpus(lm: LoadedModel, request: CaptureRequest, contexts: Tensor, sites: list[str], run: Any,
                   reporter: Reporter, keep: dict[int, dict[str, Any]] | None = None
                   ) -> tuple[list[dict], dict[str, int], StateWriter, dict[str, str]]:
    """Run a corpus capture into ``run``: (trace lines, widths, the writer to finish, the generation plan);
    ``keep``: context -> {} to fill with its stored rows per site (a bfloat16 capture's recheck sample)."""
    bos = lm.tokenizer.bos_token_id
    text_of = _TokenText(lm.tokenizer)
    lines: list[dict] = []
    writer: StateWriter | None = None
    widths: dict[str, int] = {}
    n_rows = 0
    for start, states in forward_batches(lm, contexts, sites, request.batch_size, reporter,
                                         TORCH_DTYPES[request.store_dtype]):
        if writer is None:
            widths = {s: int(states[s].shape[-1]) for s in sites}
            writer = StateWriter(run, widths, request.store_dtype, request.chunk_rows)
        batch = contexts[start:start + next(iter(states.values())).shape[0]]
        mask = torch.zeros(batch.shape, dtype=torch.bool)
        mask[:, request.skip_positions:] = True
        if request.skip_bos and bos is not None:
            mask &= batch != bos
        for s in sites:
            writer.append(s, states[s][mask].numpy())             # [rows, D], context-major like the trace
            for j in range(batch.shape[0]):
                if keep is not None and start + j in keep:
                    keep[start + j][s] = states[s][j][mask[j]].numpy()
        for j, ids in enumerate(batch.tolist()):
            positions = mask[j].nonzero().flatten().tolist()
            lines.append({"step": start + j, "prompt": "", "output": "", "token_ids": ids, "tokens": text_of(ids),
                          "metadata": {"corpus": request.corpus, "context": start + j}, "generated_ids": [],
                          "prompt_len": len(ids), "interventions": [], "generation": "single_forward",
                          "positions": positions, "rows": [n_rows, n_rows + len(positions)]})
            n_rows += len(positions)
    assert writer is not None
    plan = {"path": "single_forward", "reason": f"a corpus capture: {len(lines)} contexts of "
            f"{request.context_size} tokens, one forward each, stopped after {_stop_site(sites)}"}
    return lines, widths, writer, plan
