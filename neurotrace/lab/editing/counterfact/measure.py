"""What the model says about an edit case, in one state of its weights (before or after the edit).

All prompts of a case (the edit prompt, paraphrases, neighbourhood and unrelated facts) go through the model
in padded batches; each row's next-token distribution is read at its last prompt token. Generations (for
fluency and consistency) are seeded top-k samples of ``max_new_tokens`` tokens.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from neurotrace.lab.editing.counterfact.cases import Case, Probe
from neurotrace.lab.editing.counterfact.metrics import beats, ngram_entropy, tfidf_cosine
from neurotrace.lab.editing.counterfact.text import logits_at_last, pad, sample, subject_position
from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.tokens import target_id, target_token_ids
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.seeding import make_generator

CHUNK = 32


@dataclass
class CaseIds:
    """The token ids a case is scored on."""

    new: int
    true: int
    neighbours: list[Probe]        # the neighbours the unedited model answers correctly
    neighbour_ids: list[int]
    unrelated: list[Probe]         # the unrelated facts the unedited model answers correctly


@dataclass
class State:
    """One case's readings in one state of the weights."""

    p_new: list[float]             # [edit prompt, *paraphrases]
    p_true: list[float]
    nb_true: list[float]
    nb_new: list[float]
    unrelated_top: list[int]
    texts: list[str]

    def efficacy(self) -> list[bool]:
        return beats(self.p_new[:1], self.p_true[:1])

    def generalisation(self) -> list[bool]:
        return beats(self.p_new[1:], self.p_true[1:])

    def specificity(self) -> list[bool]:
        return beats(self.nb_true, self.nb_new)


def one_token(lm: LoadedModel, prompt: str, target: str, field: str) -> int:
    """The single token ``target`` adds after ``prompt``; InputError when it is more than one."""
    ids = target_token_ids(lm.tokenizer, prompt, target)
    if len(ids) != 1:
        raise InputError(field, f"target {target!r} is {len(ids)} tokens for {lm.ref.model!r}; edit rewrites "
                         "one next token", fix="choose a target that is one token (e.g. a single common word)")
    return int(ids[0])


@torch.no_grad()
def next_token_probs(lm: LoadedModel, probes: Sequence[tuple[str, str]]) -> torch.Tensor:
    """(probes, vocab) next-token probabilities after each (template, subject)."""
    out = []
    for i in range(0, len(probes), CHUNK):
        chunk = probes[i: i + CHUNK]
        rows, subj = [], []
        for template, subject in chunk:
            start = template.index("{}")
            ids, pos = subject_position(lm, template.format(subject), start, start + len(subject), "rewrites")
            rows.append(ids)
            subj.append(pos)
        b = pad(lm, rows, subj)
        out.append(torch.softmax(logits_at_last(lm, b).float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def top1(lm: LoadedModel, probes: Sequence[Probe]) -> list[int]:
    probs = next_token_probs(lm, [(p.template, p.subject) for p in probes])
    return probs.argmax(-1).tolist() if len(probes) else []


def case_ids(lm: LoadedModel, case: Case, index: int) -> CaseIds:
    prompt = case.template.format(case.subject)
    new = one_token(lm, prompt, case.target_new, f"rewrites[{index}].target_new")
    true = target_id(lm.tokenizer, case.target_true, prompt, f"rewrites[{index}].target_true") if case.target_true else -1
    firsts = [target_token_ids(lm.tokenizer, p.template.format(p.subject), p.target)[:1] or [-1]
              for p in case.neighbours]
    tops = top1(lm, case.neighbours)
    keep = [i for i, (f, t) in enumerate(zip(firsts, tops, strict=True)) if f[0] == t and f[0] != new]
    un_firsts = [target_token_ids(lm.tokenizer, p.template.format(p.subject), p.target)[:1] or [-1]
                 for p in case.unrelated]
    un_tops = top1(lm, case.unrelated)
    unrelated = [p for p, f, t in zip(case.unrelated, un_firsts, un_tops, strict=True) if f[0] == t]
    return CaseIds(new=new, true=true, neighbours=[case.neighbours[i] for i in keep],
                   neighbour_ids=[firsts[i][0] for i in keep], unrelated=unrelated)


def generation_prompts(case: Case) -> list[str]:
    return [case.template.format(case.subject), *[p.format(case.subject) for p in case.paraphrases[:1]]]


def generate(lm: LoadedModel, prompts: Sequence[str], n_new: int, seed: int) -> list[str]:
    """One seeded top-k continuation per prompt (the prompt excluded)."""
    g = make_generator(seed)
    out = []
    for text in prompts:
        ids = list(lm.tokenizer(text)["input_ids"])
        full = sample(lm, [ids], n_new, g)[0]
        out.append(lm.tokenizer.decode(full[len(ids):], skip_special_tokens=True))
    return out


def read_state(lm: LoadedModel, case: Case, ids: CaseIds, n_new: int, seed: int) -> State:
    """The case's readings with the model's current weights."""
    probes = [(case.template, case.subject), *[(t, case.subject) for t in case.paraphrases],
              *[(p.template, p.subject) for p in ids.neighbours], *[(p.template, p.subject) for p in ids.unrelated]]
    probs = next_token_probs(lm, probes)
    k = 1 + len(case.paraphrases)
    nb = probs[k: k + len(ids.neighbours)]
    un = probs[k + len(ids.neighbours):]
    texts = generate(lm, generation_prompts(case), n_new, seed) if n_new else []
    return State(p_new=probs[:k, ids.new].tolist(), p_true=probs[:k, ids.true].tolist() if ids.true >= 0 else [0.0] * k,
                 nb_true=[float(nb[i, t]) for i, t in enumerate(ids.neighbour_ids)],
                 nb_new=nb[:, ids.new].tolist() if len(nb) else [], unrelated_top=un.argmax(-1).tolist() if len(un) else [],
                 texts=texts)


def reference_texts(lm: LoadedModel, case: Case, n_new: int, seed: int) -> list[str]:
    """Text the unedited model writes about the new target: from facts whose answer it is, else from it."""
    prompts = [p.template.format(p.subject) + " " + p.target for p in case.references] or [f"{case.target_new} is"]
    return [p + " " + t for p, t in zip(prompts, generate(lm, prompts, n_new, seed + 1), strict=True)]


def fluency(state: State) -> list[float]:
    return [ngram_entropy(t) for t in state.texts]


def consistency(state: State, refs: Sequence[str], others: Sequence[str]) -> list[float]:
    """Per generated text, its TF-IDF cosine to the reference text (IDF over these texts and ``others``)."""
    ref = " ".join(refs)
    corpus = [*state.texts, *others, ref]
    return [tfidf_cosine(t, ref, corpus) for t in state.texts]
