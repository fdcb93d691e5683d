"""diff: the same inputs through both sides, measured against a noise-floor control.

Sides. ``model`` names a base plus an adapter and ``base`` is omitted: ONE load, the adapter switched
off for the base side and on for the tuned side (mode ``adapter``). Otherwise two loads that must
tokenize every input identically (mode ``models``).

Noise floor (the control that says what "differs" means). Adapter mode: the same adapter with each
LoRA ``B`` matrix's rows shuffled (seeded) - a weight change with exactly the adapter's singular
values per module but no learned direction. Models mode: the base with seeded Gaussian noise of 1% of
each token's norm added to the embeddings (dropout-free). Every measure is computed between the base
and the floor side as well, and an input or layer "differs" only above the floor's value.

With a ``dictionary`` (fitted on the base) its features' mean activations are compared the same way
(:mod:`neurotrace.lab.diff.features`).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch

from neurotrace.lab.capture import corpus
from neurotrace.lab.diff.features import FeatureTally
from neurotrace.lab.diff.measures import (
    InputMeasures,
    SideStates,
    compare,
    forward,
    lens_logprobs,
    linear_cka,
)
from neurotrace.lab.diff.report import write_report
from neurotrace.lab.diff.schema import DiffRequest, DiffResult
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.chat import prompt_label, templated
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.access.tokens import token_texts
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.model.weights.lora import adapter_state, has_adapter, split
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.sae import Dictionary, check_fits, load_dictionary, record_dictionary
from neurotrace.lab.seeding import make_generator

NOISE = 0.01


@contextmanager
def shuffled_adapter(lm: LoadedModel, seed: int) -> Iterator[None]:
    """The adapter with every lora_B's rows permuted (seeded) for the block; restored afterwards."""
    gen = make_generator(seed)
    saved = []
    with torch.no_grad():
        for name, p in lm.model.named_parameters():
            if ".lora_B." in name:
                saved.append((p, p.detach().clone()))
                p.copy_(p[torch.randperm(p.shape[0], generator=gen)])
    try:
        yield
    finally:
        with torch.no_grad():
            for p, value in saved:
                p.copy_(value)


@contextmanager
def embedding_noise(lm: LoadedModel, seed: int) -> Iterator[None]:
    """Seeded Gaussian noise of NOISE x each token's norm added to the residual entering block 0."""
    gen = make_generator(seed)

    def add(act: torch.Tensor, site: str) -> torch.Tensor:
        noise = torch.randn(act.shape, generator=gen).to(act.device, act.dtype)
        noise = noise / noise.norm(dim=-1, keepdim=True) * act.norm(dim=-1, keepdim=True) * NOISE
        return act + noise

    with hooked(lm.model, lm.adapter, {site_name("resid_pre", 0): add}):
        yield


def _ids(lm: LoadedModel, text: str, i: int, new_tokens: int) -> torch.Tensor:
    ids = list(lm.tokenizer(text, add_special_tokens=True)["input_ids"])
    if not ids:
        raise InputError(f"prompts[{i}]", "the prompt tokenizes to nothing", fix="give some text")
    if lm.max_positions and len(ids) + new_tokens > lm.max_positions:
        raise InputError(f"prompts[{i}]", f"{len(ids)} tokens leave no room in {lm.max_positions} positions",
                         fix="shorten it or lower max_new_tokens")
    return torch.tensor(ids)


def _inputs(lab: Lab, lm: LoadedModel, request: DiffRequest) -> list[tuple[str, torch.Tensor, str | None]]:
    """(label, token ids, text) per input: templated prompts, or corpus contexts (text None)."""
    if request.prompts:
        out = []
        for i, p in enumerate(request.prompts):
            text = templated(lm.tokenizer, p, chat=request.chat, model=request.model)
            out.append((prompt_label(p), _ids(lm, text, i, request.max_new_tokens), text))
        return out
    contexts = corpus.token_contexts(lm.tokenizer, corpus.corpus_texts(lab, str(request.corpus)),
                                     context_size=request.context_size,
                                     max_tokens=request.max_contexts * request.context_size, seed=request.seed)
    return [(lm.tokenizer.decode(row[1:16].tolist()) + "...", row, None) for row in contexts]


@torch.no_grad()
def _generate(lm: LoadedModel, ids: torch.Tensor, n: int) -> str:
    if n == 0:
        return ""
    x = ids[None].to(lm.device)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    out = lm.model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                            pad_token_id=pad)
    return lm.tokenizer.decode(out[0, x.shape[1]:], skip_special_tokens=True)


Side = Callable[[torch.Tensor], SideStates]


def run_diff(request: DiffRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> DiffResult:
    """Where and on what inputs do two models (or one model's adapter states) differ, above a noise floor?"""
    lab.check(request)
    adapter = split(request.model)[1]
    if request.base is None and adapter is None:
        raise InputError("base", f"{request.model!r} names no adapter to switch off",
                         fix="name the model as BASE+ADAPTER (e.g. 'gemma-3-270m+eiffel-rome-lora') or give base")
    d = load_dictionary(lab, request.dictionary, field="dictionary") if request.dictionary else None
    with lab.cache.lease(ModelRef(model=request.model, device=request.device)) as lm:
        base_cm = (lab.cache.lease(ModelRef(model=request.base, device=request.device)) if request.base
                   else nullcontext(lm))
        with base_cm as bm:
            if d is not None:
                for side, name in ((bm, request.base or request.model), (lm, request.model)):
                    check_fits(d, side, name, field="dictionary")
                d = d.to(lm.device)
            return _run(request, lab, lm, bm, reporter, d)


def _run(request: DiffRequest, lab: Lab, lm: LoadedModel, bm: LoadedModel, reporter: Reporter,
         d: Dictionary | None) -> DiffResult:
    mode = "models" if bm is not lm else "adapter"
    if mode == "adapter" and not has_adapter(lm.model):
        raise InputError("model", f"{request.model!r} has no adapter loaded", fix="name it as BASE+ADAPTER")
    if mode == "models" and lm.n_layers != bm.n_layers:
        raise InputError("base", f"{request.base!r} has {bm.n_layers} layers, {request.model!r} {lm.n_layers}",
                         fix="compare models of one architecture (a base and its tuned copy)")
    off = (lambda: adapter_state(lm.model, False)) if mode == "adapter" else nullcontext
    floor_cm = ((lambda: shuffled_adapter(lm, request.seed)) if mode == "adapter"
                else (lambda: embedding_noise(bm, request.seed)))
    floor_model = lm if mode == "adapter" else bm
    floor_text = ("the adapter with each LoRA B matrix's rows shuffled (same singular values, no learned "
                  f"direction; seed {request.seed})" if mode == "adapter"
                  else f"the base with Gaussian noise of {NOISE:.0%} of each token's norm on its embeddings "
                       f"(seed {request.seed})")
    inputs = _inputs(lab, lm, request)
    bos = getattr(lm.tokenizer, "bos_token_id", None)
    measured: list[tuple[InputMeasures, InputMeasures]] = []
    cka_a, cka_b, cka_f, token_ids, gens, tops = [], [], [], [], [], []
    site = d.cfg.site if d is not None else None
    tally = FeatureTally(d) if d is not None else None
    for i, (_label, ids, text) in enumerate(inputs):
        reporter.check()
        reporter.step(i, len(inputs), f"input {i + 1} of {len(inputs)}")
        if mode == "models" and text is not None and list(bm.tokenizer(text)["input_ids"]) != ids.tolist():
            raise InputError("base", f"{request.base!r} and {request.model!r} tokenize prompts[{i}] differently",
                             fix="compare models that share a tokenizer (a base and its tuned copy)")
        with off():
            a = forward(bm, ids, request.attention, site)
            gen_a = _generate(bm, ids, request.max_new_tokens)
        b = forward(lm, ids, request.attention, site)
        gen_b = _generate(lm, ids, request.max_new_tokens)
        with floor_cm():
            f = forward(floor_model, ids, request.attention, site)
        skip_first = bos is not None and int(ids[0]) == bos      # BOS: an attention sink, not the input
        lens_a = lens_logprobs(bm, a)
        measured.append((compare(bm, lm, a, b, skip_first, lens_a), compare(bm, floor_model, a, f, skip_first, lens_a)))
        start = 1 if skip_first and len(ids) > 1 else 0
        if tally is not None:
            tally.add(a, b, f, start)
        cka_a.append(a.rows[:, start:])
        cka_b.append(b.rows[:, start:])
        cka_f.append(f.rows[:, start:])
        token_ids.append(ids.tolist())
        gens.append((gen_a, gen_b))
        tops.append(tuple(token_texts(lm.tokenizer, [int(a.logprobs[-1].argmax()), int(b.logprobs[-1].argmax())])))
    reporter.step(len(inputs), len(inputs), "writing the run")
    xa, xb, xf = torch.cat(cka_a, 1), torch.cat(cka_b, 1), torch.cat(cka_f, 1)
    cka = [linear_cka(xa[r], xb[r]) for r in range(xa.shape[0])]
    floor_cka = [linear_cka(xa[r], xf[r]) for r in range(xa.shape[0])]
    with lab.store.open_run("diff", request, seed=request.seed) as run:
        run.add_model(request.model, lm.fingerprint, lm.provenance)
        if mode == "models":
            run.add_model(str(request.base), bm.fingerprint, bm.provenance)
        if d is not None:
            record_dictionary(run, d)
        return write_report(run, request, lm, mode=mode, floor=floor_text, labels=[t[0] for t in inputs],
                            token_ids=token_ids, measured=measured, cka=cka, floor_cka=floor_cka, gens=gens,
                            tops=tops, features=(d.cfg.site, tally.table()) if tally is not None and d else None)
