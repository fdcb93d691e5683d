"""Check every fact on every model before any compute, so a trace never fails after minutes.

A fact is traceable on a model when it tokenizes (subject span, target in the vocabulary), fits the
model's context, and - for subject swap - its corrupt subject has the clean subject's token length.
The clean forward that says whether the model knows the fact (top-1 = target) is done here too, and
its numbers are reused. Untraceable facts (and, under ``rome_compat``, unknown ones) are skipped and
listed; only when no fact at all can be traced on a model does the request fail, naming the first
fact's field.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from neurotrace.lab.errors import InputError
from neurotrace.lab.facts import Fact
from neurotrace.lab.model.loading import LoadedModel
from neurotrace.lab.model.tokens import token_texts
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.noise import fact_key
from neurotrace.lab.tracing.prepare import PreparedFact, clean_states, prepare_fact
from neurotrace.lab.tracing.schema import SkippedFact, TraceRequest


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


def check_facts(request: TraceRequest, lm: LoadedModel, facts: Sequence[Fact], reporter: Reporter
                ) -> tuple[list[Checked], list[SkippedFact]]:
    """The traceable facts of ``facts`` on ``lm`` and the skipped ones, with why."""
    ok: list[Checked] = []
    skipped: list[SkippedFact] = []
    errors: list[InputError] = []
    for i, fact in enumerate(facts):
        reporter.step(0, None, f"{lm.ref.model}: checking fact {i + 1}/{len(facts)}")
        try:
            prep = prepare_fact(lm, fact, i)
        except InputError as err:
            if err.field == "models":
                raise
            errors.append(err)
            skipped.append(SkippedFact(fact_id=fact_key(fact), field=err.field, reason=err.message))
            continue
        err = _problem(request, lm, prep, i)
        if err is not None:
            errors.append(err)
            skipped.append(SkippedFact(fact_id=fact_key(fact), field=err.field, reason=err.message))
            continue
        _, hidden = clean_states(lm, prep.ids, [])
        logits = lm.adapter.logits_at(lm.model, hidden[prep.predict_pos]).float()
        checked = Checked(i, prep, float(torch.softmax(logits, -1)[prep.target_id]), int(logits.argmax()))
        if request.rome_compat and not checked.correct:
            top = token_texts(lm.tokenizer, [checked.top_id])[0]
            skipped.append(SkippedFact(fact_id=fact_key(fact), field=f"facts[{i}]",
                                       reason=f"unknown: top-1 is {top!r}, not {fact.target!r} (rome_compat skips it)"))
            continue
        ok.append(checked)
    if not ok and errors:
        first = errors[0]
        raise InputError(first.field, f"no fact can be traced on {lm.ref.model}; the first: {first.message}",
                         fix=first.fix)
    return ok, skipped
