"""Path patching (Wang et al. 2022, IOI): a sender head's effect through the receivers' queries/keys/values only.

For each sender head ``s`` (in a layer before every receiver):

1. run the corrupt prompt with every head's output (``hook_z``) frozen at its corrupt value except ``s``,
   which gets its clean value; MLPs recompute. Record the receivers' ``q`` / ``k`` / ``v`` (the chosen
   parts): they now carry the sender's clean signal along direct paths and paths through MLPs only;
2. run the corrupt prompt with just those receiver parts replaced by the recorded ones, and read the metric.

Senders are rows of one batch in both runs (each row has its own sender), so the numbers equal one pair
of forwards per sender. Step 2 reuses :mod:`neurotrace.lab.patching.attn`.
"""

import re
from collections.abc import Callable

import torch
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.patching.attn import AttnEdits, attention_edits
from neurotrace.lab.progress import Reporter

HEAD_RE = re.compile(r"^(\d+):(\d+)$")


def parse_receivers(refs: list[str], n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """'L:H' refs -> (layer, head); InputError('receivers[i]'); layer 0 has no senders before it."""
    out = []
    for i, ref in enumerate(refs):
        m = HEAD_RE.match(ref.strip())
        if not m or int(m.group(1)) >= n_layers or int(m.group(2)) >= n_heads or int(m.group(1)) == 0:
            raise InputError(f"receivers[{i}]", f"{ref!r} is not a receiver head of this model",
                             fix=f"write 'layer:head' with 1 <= layer < {n_layers} and head < {n_heads}")
        out.append((int(m.group(1)), int(m.group(2))))
    return out


@torch.no_grad()
def head_outputs(lm: LoadedModel, ids: Tensor) -> dict[str, Tensor]:
    """Every layer's ``hook_z`` (pos, n_heads * d_head) for one prompt."""
    store: dict[str, Tensor] = {}

    def save(act: Tensor, site: str) -> None:
        store[site] = act[0].detach().clone()

    with hooked(lm.model, lm.adapter, {f"blocks.{layer}.attn.hook_z": save for layer in range(lm.n_layers)}):
        lm.model(input_ids=ids[None].to(lm.device))
    return store


def _freeze(senders: list[tuple[int, int]], corrupt: Tensor, clean: Tensor, layer: int, d_head: int):
    def put(act: Tensor, site: str) -> Tensor:
        act = corrupt[None].expand_as(act).clone()                     # (rows, pos, H * d)
        for row, (s_layer, s_head) in enumerate(senders):
            if s_layer == layer:
                cols = slice(s_head * d_head, (s_head + 1) * d_head)
                act[row, :, cols] = clean[:, cols]
        return act
    return put


@torch.no_grad()
def path_grid(lm: LoadedModel, clean_ids: Tensor, corrupt_ids: Tensor, receivers: list[tuple[int, int]],
              parts: list[str], heads: int, metric: Callable[[Tensor], Tensor], last_logits: Callable,
              batch_size: int, reporter: Reporter) -> Tensor:
    """Metric (layers, heads) per sender head; NaN for heads at or after the first receiver's layer."""
    clean_z, corrupt_z = head_outputs(lm, clean_ids), head_outputs(lm, corrupt_ids)
    d_head = clean_z["blocks.0.attn.hook_z"].shape[-1] // heads
    first = min(layer for layer, _ in receivers)
    senders = [(layer, h) for layer in range(first) for h in range(heads)]
    values = torch.full((lm.n_layers, heads), float("nan"))
    for start in range(0, len(senders), batch_size):
        reporter.step(start, len(senders), f"path patching senders {start}-{start + batch_size}")
        chunk = senders[start:start + batch_size]
        rows = corrupt_ids[None].expand(len(chunk), -1).to(lm.device)
        hooks = {f"blocks.{layer}.attn.hook_z": _freeze(chunk, corrupt_z[f"blocks.{layer}.attn.hook_z"],
                                                        clean_z[f"blocks.{layer}.attn.hook_z"], layer, d_head)
                 for layer in range(lm.n_layers)}
        record: dict[tuple[int, str], Tensor] = {}
        with hooked(lm.model, lm.adapter, hooks), attention_edits(lm, AttnEdits(record=record)):
            lm.model(input_ids=rows)
        edits = AttnEdits(clean=record, per_row=True)
        for row in range(len(chunk)):
            for layer, head in receivers:
                for part in parts:
                    kv = part in ("k", "v")
                    groups = heads // record[(layer, part)].shape[1] if kv else 1
                    edits.patches.setdefault(layer, []).append((row, part, head // groups))
        with attention_edits(lm, edits):
            scores = metric(last_logits(lm, rows))
        for row, (layer, h) in enumerate(chunk):
            values[layer, h] = scores[row]
    return values
