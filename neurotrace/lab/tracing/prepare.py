"""Shared machinery for causal tracing: preparing facts and running batched patched forwards.

A *prepared fact* holds the token ids of the clean prompt (and of the subject-swapped and
context-swapped prompts when they align token for token), the subject's token range, the position
whose prediction is scored (the last token for causal LMs, the mask for masked LMs) and the target id.

:func:`target_probs` runs a batch of rows through the model body with hooks attached and applies the
LM head at the scored position only, returning p(target) per row. Rows are independent, so many
patched runs share one forward; this is exact (no approximation), and it avoids computing logits for
every position.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.facts import Fact
from neurotrace.lab.model.adapters import site_name
from neurotrace.lab.model.hooks import hooked
from neurotrace.lab.model.loading import LoadedModel
from neurotrace.lab.model.tokens import target_token_ids, token_texts

KIND_SITE = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}


@dataclass
class PreparedFact:
    fact: Fact
    ids: Tensor                      # (pos,) clean token ids
    tokens: list[str]
    subject: tuple[int, int]         # [start, end) token range of the subject
    predict_pos: int                 # position whose next/masked token is scored
    target_id: int
    swap_ids: Tensor | None = None   # (pos,) subject-swapped ids, if they align
    context_pos: list[int] = field(default_factory=list)
    context_ids: Tensor | None = None  # (pos,) context-swapped ids, if they align
    notes: list[str] = field(default_factory=list)


def _masked_text(fact: Fact, subject: str, mask: str) -> str:
    suffix = next((v.suffix for v in fact.variants if not v.prefix), "")
    return fact.prompt(subject) + " " + mask + suffix


def _encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _token_range(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    return [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]


def prepare_fact(lm: LoadedModel, fact: Fact, index: int) -> PreparedFact:
    """Tokenise a fact for ``lm``; raise InputError naming ``facts[index]`` when it cannot be traced
    (``models`` when the model cannot be traced at all: a masked LM without a mask token)."""
    tok = lm.tokenizer
    notes: list[str] = []
    mask = getattr(tok, "mask_token", None) if lm.kind == "masked" else None
    if lm.kind == "masked" and mask is None:
        raise InputError("models", f"{lm.ref.model!r} is a masked LM but its tokenizer has no mask token, so "
                         "there is no position at which to ask for the target",
                         fix="use a tokenizer with a mask token (e.g. [MASK]) or a causal LM")

    def text_for(subject: str) -> str:
        return _masked_text(fact, subject, mask) if mask else fact.prompt(subject)

    ids, offsets = _encode(tok, text_for(fact.clean_subject))
    s_char, e_char = fact.subject_span()
    subj = _token_range(offsets, s_char, e_char)
    if not subj:
        raise InputError(f"facts[{index}].clean_subject", f"subject {fact.clean_subject!r} maps to no token",
                         fix="check the template and subject")
    subject = (subj[0], subj[-1] + 1)
    predict_pos = ids.index(tok.mask_token_id) if mask else len(ids) - 1
    targets = target_token_ids(tok, fact.prompt(), fact.target)
    if not targets or (tok.unk_token_id is not None and targets[0] == tok.unk_token_id):
        raise InputError(f"facts[{index}].target", f"target {fact.target!r} is not in {lm.ref.model}'s vocabulary",
                         fix="validate the facts with generate_facts for this model")
    if len(targets) > 1:
        notes.append(f"target {fact.target!r} is {len(targets)} tokens; the first is scored")
    prep = PreparedFact(fact=fact, ids=torch.tensor(ids), tokens=token_texts(tok, ids), subject=subject,
                        predict_pos=predict_pos, target_id=targets[0], notes=notes)
    if fact.corrupt_subject:
        swap, _ = _encode(tok, text_for(fact.corrupt_subject))
        if len(swap) == len(ids):
            prep.swap_ids = torch.tensor(swap)
        else:
            notes.append("the corrupt subject has a different token length; subject swap is unavailable")
    if fact.context_from and fact.context_to:
        c_start = _context_char(fact)
        prep.context_pos = _token_range(offsets, c_start, c_start + len(fact.context_from))
        swapped_template = fact.template.replace(fact.context_from, fact.context_to, 1)
        alt = Fact(template=swapped_template, clean_subject=fact.clean_subject, target=fact.target,
                   variants=fact.variants)
        ctx_ids, _ = _encode(tok, _masked_text(alt, alt.clean_subject, mask) if mask else alt.prompt())
        if len(ctx_ids) == len(ids) and prep.context_pos:
            prep.context_ids = torch.tensor(ctx_ids)
        else:
            notes.append("the context corruption changes the token length; context patching is unavailable")
    return prep


def _context_char(fact: Fact) -> int:
    """Character offset of context_from in the filled prompt (template offsets shift after '{}')."""
    t = fact.template
    i = t.index(fact.context_from)
    slot = t.index("{}")
    return i if i < slot else i - 2 + len(fact.clean_subject)


def subject_noise_std(lm: LoadedModel, facts: Sequence[PreparedFact]) -> float:
    """Std of the token embeddings of every subject token in ``facts`` (ROME's noise unit)."""
    emb = lm.adapter.module(lm.model, lm.adapter.embed)
    with torch.no_grad():
        rows = [emb(p.ids[p.subject[0]:p.subject[1]].to(lm.device)) for p in facts]
    return float(torch.cat(rows).float().std())


HookMap = Mapping[str, Callable[..., Tensor | None]]


@torch.no_grad()
def target_probs(lm: LoadedModel, ids: Tensor, predict_pos: int, target_id: int,
                 hooks: HookMap | None = None) -> Tensor:
    """p(target) at ``predict_pos`` for each row of ``ids`` (batch, pos), with ``hooks`` attached."""
    body = lm.adapter.module(lm.model, lm.adapter.base)
    with hooked(lm.model, lm.adapter, hooks or {}):
        hidden = body(input_ids=ids.to(lm.device)).last_hidden_state       # (batch, pos, d_model)
    logits = lm.adapter.logits_at(lm.model, hidden[:, predict_pos])         # (batch, d_vocab)
    return torch.softmax(logits.float(), dim=-1)[:, target_id]


@torch.no_grad()
def clean_states(lm: LoadedModel, ids: Tensor, sites: Sequence[str]) -> tuple[dict[str, Tensor], Tensor]:
    """Activations at ``sites`` for one clean prompt (pos, width) and the scored-position logits."""
    store: dict[str, Tensor] = {}

    def save(act: Tensor, site: str) -> None:
        store[site] = act[0].detach().clone()

    body = lm.adapter.module(lm.model, lm.adapter.base)
    with hooked(lm.model, lm.adapter, {s: save for s in sites}):
        hidden = body(input_ids=ids[None].to(lm.device)).last_hidden_state
    return store, hidden[0]


def sites_for(kind: str, layer: int, window: int, n_layers: int) -> list[str]:
    """The sites restored for one grid cell: resid at ``layer``; mlp/attn over a window around it."""
    if kind == "resid":
        return [site_name("resid_post", layer)]
    lo, hi = max(0, layer - window // 2), min(n_layers, layer - (-window // 2))
    return [site_name(KIND_SITE[kind], layer_) for layer_ in range(lo, hi)]


def noise_hook(noise_rows: Tensor, subject: tuple[int, int]) -> Callable[..., Tensor]:
    """A hook_embed hook adding ``noise_rows`` (rows, n_subject, d_model) to the subject's embeddings."""
    s, e = subject

    def add(act: Tensor, site: str) -> Tensor:
        out = act.clone()
        out[:, s:e] += noise_rows.to(device=act.device, dtype=act.dtype)
        return out

    return add
