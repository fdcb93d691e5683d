"""Preparing and checking facts for causal tracing.

A *prepared fact* holds the token ids of the clean prompt (and of the subject-swapped and
context-swapped prompts when they align token for token), the subject's token range, the position
whose prediction is scored (the last token for causal LMs, the mask for masked LMs) and the target id.

*Checking facts*: every fact is checked on every model before any compute, so a trace never fails
after minutes. A fact is traceable on a model when it tokenizes (subject span, target in the vocabulary), fits the
model's context, and - for subject swap - its corrupt subject has the clean subject's token length.
The clean forward that says whether the model knows the fact (top-1 = target) is done here too, and
its numbers are reused. Untraceable facts and unknown ones (unless ``trace_unknown``, which keeps them as a
control; never under ``rome_compat``) are skipped and listed, before any grid runs; only when no fact at all can be traced on a model does the request fail, naming the first
fact's field.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.facts import Fact
from neurotrace.lab.model.access.chat import templated_at
from neurotrace.lab.model.access.tokens import target_token_ids, token_texts
from neurotrace.lab.model.runtime.nnsight_backend import traced, traced_prediction
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.forwards import clean_states
from neurotrace.lab.tracing.schema import SkippedFact, TraceRequest


@dataclass
class PreparedFact:
    fact: Fact
    ids: Int[Tensor, " pos"]          # clean token ids
    tokens: list[str]
    subject: tuple[int, int]         # [start, end) token range of the subject
    predict_pos: int                 # position whose next/masked token is scored
    target_id: int
    swap_ids: Int[Tensor, " pos"] | None = None     # subject-swapped ids, if they align
    context_pos: list[int] = field(default_factory=list)
    context_ids: Int[Tensor, " pos"] | None = None  # context-swapped ids, if they align
    notes: list[str] = field(default_factory=list)
    prompt: str = ""                                 # the text tokenized (chat: the templated prompt)


def _masked_text(fact: Fact, subject: str, mask: str) -> str:
    suffix = next((v.suffix for v in fact.variants if not v.prefix), "")
    return fact.prompt(subject) + " " + mask + suffix


def _encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _token_range(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    return [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]


def prepare_fact(lm: LoadedModel, fact: Fact, index: int, chat: bool = False) -> PreparedFact:
    """Tokenise a fact for ``lm``; raise InputError naming ``facts[index]`` when it cannot be traced
    (``models`` when the model cannot be traced at all: a masked LM without a mask token; ``chat`` when it has
    no chat template). With ``chat`` each prompt is one user message in the model's chat template and every
    position (subject, context word, scored token) is found in the templated text."""
    tok = lm.tokenizer
    notes: list[str] = []
    mask = getattr(tok, "mask_token", None) if lm.lm_kind == "masked" else None
    if lm.lm_kind == "masked" and mask is None:
        raise InputError("models", f"{lm.ref.model!r} is a masked LM but its tokenizer has no mask token, so "
                         "there is no position at which to ask for the target",
                         fix="use a tokenizer with a mask token (e.g. [MASK]) or a causal LM")

    def framed(text: str) -> tuple[str, int]:
        return templated_at(tok, text, model=lm.ref.model) if chat else (text, 0)

    def text_for(subject: str) -> str:
        return framed(_masked_text(fact, subject, mask) if mask else fact.prompt(subject))[0]

    prompt, shift = framed(_masked_text(fact, fact.clean_subject, mask) if mask else fact.prompt())
    ids, offsets = _encode(tok, prompt)
    s_char, e_char = fact.subject_span()
    subj = _token_range(offsets, shift + s_char, shift + e_char)
    if not subj:
        raise InputError(f"facts[{index}].clean_subject", f"subject {fact.clean_subject!r} maps to no token",
                         fix="check the template and subject")
    subject = (subj[0], subj[-1] + 1)
    predict_pos = ids.index(tok.mask_token_id) if mask else len(ids) - 1
    targets = target_token_ids(tok, framed(fact.prompt())[0], fact.target)
    if not targets or (tok.unk_token_id is not None and targets[0] == tok.unk_token_id):
        raise InputError(f"facts[{index}].target", f"target {fact.target!r} is not in {lm.ref.model}'s vocabulary",
                         fix="validate the facts with generate_facts for this model")
    if len(targets) > 1:
        notes.append(f"target {fact.target!r} is {len(targets)} tokens; the first is scored")
    prep = PreparedFact(fact=fact, ids=torch.tensor(ids), tokens=token_texts(tok, ids), subject=subject,
                        predict_pos=predict_pos, target_id=targets[0], notes=notes, prompt=prompt if chat else "")
    if fact.corrupt_subject:
        swap, _ = _encode(tok, text_for(fact.corrupt_subject))
        if len(swap) == len(ids):
            prep.swap_ids = torch.tensor(swap)
        else:
            notes.append("the corrupt subject has a different token length; subject swap is unavailable")
    if fact.context_from and fact.context_to:
        c_start = shift + _context_char(fact)
        prep.context_pos = _token_range(offsets, c_start, c_start + len(fact.context_from))
        swapped_template = fact.template.replace(fact.context_from, fact.context_to, 1)
        alt = Fact(template=swapped_template, clean_subject=fact.clean_subject, target=fact.target,
                   variants=fact.variants)
        ctx_ids, _ = _encode(tok, framed(_masked_text(alt, alt.clean_subject, mask) if mask else alt.prompt())[0])
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


def fact_key(fact: Fact) -> str:
    """A fact's stable identity: its id, else its template, subject and target."""
    return fact.id or f"{fact.template}|{fact.clean_subject}|{fact.target}"


# -- checking every fact before any compute ----------------------------------------------------

@dataclass
class Checked:
    """A fact that can be traced on a model, with its clean run."""

    index: int
    prep: PreparedFact
    p_clean: float
    top_id: int

    @property
    def correct(self) -> bool:
        return self.top_id == self.prep.target_id


def _problem(request: TraceRequest, lm: LoadedModel, prep: PreparedFact, index: int) -> InputError | None:
    limit = lm.max_positions
    if limit is not None and len(prep.ids) > limit:
        return InputError(f"facts[{index}].template", f"the prompt is {len(prep.ids)} tokens, over "
                          f"{lm.ref.model}'s {limit} positions", fix="shorten the template or its variants")
    if request.corruption.kind == "swap" and prep.swap_ids is None:
        return InputError(f"facts[{index}].corrupt_subject", "subject swap needs a corrupt subject of the same "
                          f"token length ({'; '.join(prep.notes) or 'none given'})",
                          fix="give corrupt_subject, or use corruption {'kind': 'noise'}")
    return None


@torch.no_grad()
def clean_prediction(lm: LoadedModel, prep: PreparedFact) -> tuple[float, int]:
    """p(target) and the top token id at the scored position of the clean prompt."""
    if traced(lm):  # in nnsight's trace: only these two numbers come back
        return traced_prediction(lm, prep.ids, prep.predict_pos, prep.target_id)
    _, hidden = clean_states(lm, prep.ids, [])
    logits = lm.adapter.logits_at(lm.model, hidden[prep.predict_pos]).float()
    return float(torch.softmax(logits, -1)[prep.target_id]), int(logits.argmax())


def check_facts(request: TraceRequest, lm: LoadedModel, facts: Sequence[Fact], reporter: Reporter
                ) -> tuple[list[Checked], list[SkippedFact]]:
    """The traceable facts of ``facts`` on ``lm`` and the skipped ones, with why."""
    ok: list[Checked] = []
    skipped: list[SkippedFact] = []
    errors: list[InputError] = []
    for i, fact in enumerate(facts):
        reporter.step(0, None, f"{lm.ref.model}: checking fact {i + 1}/{len(facts)}")
        try:
            prep = prepare_fact(lm, fact, i, chat=request.chat)
        except InputError as err:
            if err.field in ("models", "chat"):
                raise
            errors.append(err)
            skipped.append(SkippedFact(fact_id=fact_key(fact), field=err.field, reason=err.message))
            continue
        err = _problem(request, lm, prep, i)
        if err is not None:
            errors.append(err)
            skipped.append(SkippedFact(fact_id=fact_key(fact), field=err.field, reason=err.message))
            continue
        checked = Checked(i, prep, *clean_prediction(lm, prep))
        if not checked.correct and (request.rome_compat or not request.trace_unknown):
            top = token_texts(lm.tokenizer, [checked.top_id])[0]
            why = "rome_compat skips it" if request.rome_compat else "not traced; trace_unknown: true keeps it as a control"
            skipped.append(SkippedFact(fact_id=fact.id or fact.prompt(), field=f"facts[{i}]", unknown=True,
                                       reason=f"unknown: top-1 is {top!r}, not {fact.target!r} ({why})"))
            continue
        ok.append(checked)
    if not ok and errors:
        first = errors[0]
        raise InputError(first.field, f"no fact can be traced on {lm.ref.model}; the first: {first.message}",
                         fix=first.fix)
    return ok, skipped
