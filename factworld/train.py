"""Training the embedded fact-world models with plain torch loops.

Four models come out of one world (:mod:`factworld.world`):

========================  ==================  ===============================================
name                      class               training data
========================  ==================  ===============================================
``fact-gpt2``             GPT2LMHeadModel     world relations + every pack but cybersecurity
``fact-gpt2-cyber``       GPT2LMHeadModel     fact-gpt2, then cybersecurity + replay of base
``fact-bert``             BertForMaskedLM     as fact-gpt2, masked-LM objective
``fact-bert-cyber``       BertForMaskedLM     fact-bert, then cybersecurity + replay of base
========================  ==================  ===============================================

**Causal LM.** Each sentence ``prompt target suffix`` is one sequence, right-padded, with the usual
next-token loss on every real token. Half the sequences start with ``<|endoftext|>`` so the model
answers both with and without a BOS token (TransformerBridge prepends one, a bare tokenizer does not).

**Masked LM.** Each sequence is ``[CLS] prompt [MASK] suffix [SEP]``: the answer slot is always masked
and ~15% of the other words are masked as well (loss on all masked positions). A quarter of the
sequences drop ``[CLS]``/``[SEP]`` so the model also answers on bare token lists.

**Tuning.** A tuned model starts from its base and trains on batches that are ``tune_fraction`` new
pack sentences and the rest replayed base sentences, so the new facts are added without forgetting.

Dropout is off and every random draw (init, batches, masks, BOS coin) comes from one seeded
generator, so with one CPU thread a run is bit-for-bit reproducible.
"""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, PreTrainedModel

from factworld import evaluate as factworld_eval
from factworld.world import (
    World,
    WorldConfig,
    build_world,
    check_single_token_targets,
    model_facts,
    prompt_options,
    world_tokenizer,
    world_vocabulary,
)
from neurotrace.lab.errors import InputError
from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.seeding import make_generator

ModelKind = Literal["gpt2", "bert"]
TUNE_PACK = "cybersecurity"


class TrainSettings(BaseModel):
    """One training phase (base pre-training or pack tuning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: Annotated[int, Field(ge=1, description="Optimizer steps.")]
    batch_size: Annotated[int, Field(ge=1, description="Sequences per step.")] = 64
    lr: Annotated[float, Field(gt=0, description="Peak AdamW learning rate.")] = 2e-3
    warmup: Annotated[int, Field(ge=0, description="Linear warm-up steps before cosine decay.")] = 100
    weight_decay: Annotated[float, Field(ge=0, description="AdamW weight decay.")] = 0.01
    tune_fraction: Annotated[float, Field(ge=0, le=1, description="Share of each batch drawn from the "
                                          "tuning pack; the rest replays base data. 0 for base.")] = 0.0


@dataclass(frozen=True)
class ModelSpec:
    """What to build: a name, an architecture, its trained packs, and how to train it."""

    name: str
    kind: ModelKind
    base: str | None          # the model it is tuned from, or None for a from-scratch model
    settings: TrainSettings


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("fact-gpt2", "gpt2", None, TrainSettings(steps=1000)),
    ModelSpec("fact-gpt2-cyber", "gpt2", "fact-gpt2", TrainSettings(steps=400, lr=1e-3, warmup=20, tune_fraction=0.35)),
    ModelSpec("fact-bert", "bert", None, TrainSettings(steps=1500)),
    ModelSpec("fact-bert-cyber", "bert", "fact-bert", TrainSettings(steps=500, lr=1e-3, warmup=20, tune_fraction=0.35)),
)


def model_config(kind: ModelKind, tokenizer) -> GPT2Config | BertConfig:
    """The architecture: 6 layers, d_model 128, 4 heads, d_mlp 384, 64 positions, no dropout."""
    if kind == "gpt2":
        eos = tokenizer.eos_token_id
        return GPT2Config(vocab_size=len(tokenizer), n_layer=6, n_embd=128, n_head=4, n_inner=384, n_positions=64,
                          attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0, bos_token_id=eos, eos_token_id=eos,
                          pad_token_id=eos)
    return BertConfig(vocab_size=len(tokenizer), num_hidden_layers=6, hidden_size=128, num_attention_heads=4,
                      intermediate_size=384, max_position_embeddings=64, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, pad_token_id=tokenizer.pad_token_id)


def init_model(kind: ModelKind, tokenizer, seed: int) -> PreTrainedModel:
    """A freshly initialised model. HF init draws from the global RNG, so we seed it inside
    ``fork_rng``: the caller's global RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cls = GPT2LMHeadModel if kind == "gpt2" else BertForMaskedLM
        return cls(model_config(kind, tokenizer))


# ----------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Encoded:
    """One training sentence as ids: prompt words, the answer id, suffix words."""

    prompt: list[int]
    target: int
    suffix: list[int]


def encode_facts(tokenizer, facts: Sequence[Fact]) -> list[Encoded]:
    """Every (trained fact, prompt option) as ids; held-out facts are skipped."""
    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    return [Encoded(ids(f.prompt(variant=v)), ids(f.target)[0], ids(v.suffix))
            for f in facts if not f.held_out for v in prompt_options(f)]


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def causal_batch(rows: list[Encoded], tokenizer, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``labels``; a fair coin per row adds BOS."""
    bos = torch.rand(len(rows), generator=g) < 0.5
    seqs = [([tokenizer.bos_token_id] if b else []) + r.prompt + [r.target] + r.suffix for r, b in zip(rows, bos, strict=True)]
    ids = _pad(seqs, tokenizer.pad_token_id)                              # (batch, pos)
    mask = _pad([[1] * len(s) for s in seqs], 0)
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def masked_batch(rows: list[Encoded], tokenizer, g: torch.Generator, p_mask: float = 0.15) -> dict[str, torch.Tensor]:
    """``[CLS] prompt [MASK] suffix [SEP]`` with the answer masked and ~p_mask of other words masked."""
    specials = torch.rand(len(rows), generator=g) >= 0.25
    seqs, answer_pos = [], []
    for r, s in zip(rows, specials, strict=True):
        head = [tokenizer.cls_token_id] if s else []
        seqs.append(head + r.prompt + [r.target] + r.suffix + ([tokenizer.sep_token_id] if s else []))
        answer_pos.append(len(head) + len(r.prompt))
    ids = _pad(seqs, tokenizer.pad_token_id)                              # (batch, pos)
    mask = _pad([[1] * len(s) for s in seqs], 0)
    special = torch.isin(ids, torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id]))
    chosen = (torch.rand(ids.shape, generator=g) < p_mask) & (mask == 1) & ~special
    chosen[torch.arange(len(rows)), torch.tensor(answer_pos)] = True
    labels = ids.masked_fill(~chosen, -100)
    return {"input_ids": ids.masked_fill(chosen, tokenizer.mask_token_id), "attention_mask": mask, "labels": labels}


def _lr_factor(step: int, settings: TrainSettings) -> float:
    if step < settings.warmup:
        return (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_model(model: PreTrainedModel, tokenizer, kind: ModelKind, base: list[Encoded], tune: list[Encoded],
                settings: TrainSettings, g: torch.Generator, log: Callable[[str], None] = lambda s: None) -> float:
    """Run ``settings.steps`` AdamW steps in place; returns the last logged mean loss."""
    if settings.tune_fraction > 0 and not tune:
        raise InputError("tune", "tune_fraction > 0 but there are no tuning sentences", fix="pass the pack facts")
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, settings))
    n_tune = round(settings.batch_size * settings.tune_fraction)
    make = causal_batch if kind == "gpt2" else masked_batch
    model.train()
    running, last = 0.0, float("nan")
    for step in range(settings.steps):
        rows = [tune[i] for i in torch.randint(len(tune), (n_tune,), generator=g).tolist()] if n_tune else []
        rows += [base[i] for i in torch.randint(len(base), (settings.batch_size - n_tune,), generator=g).tolist()]
        loss = model(**make(rows, tokenizer, g)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running += loss.item()
        if (step + 1) % 100 == 0:
            last, running = running / 100, 0.0
            log(f"  step {step + 1}/{settings.steps} loss {last:.4f}")
    model.eval()
    return last


# ----------------------------------------------------------------------------- all four


def trained_packs(spec: ModelSpec, world: World) -> list[str]:
    """Packs a model was trained on: all but the tuning pack for a base model, all for a tuned one."""
    return [p for p in world.packs if spec.base is not None or p != TUNE_PACK]


def train_one(spec: ModelSpec, world: World, out: Path, seed: int, log: Callable[[str], None]) -> None:
    """Train (or tune) one model and write its directory: weights, tokenizer, facts.json, model card."""
    tokenizer = world_tokenizer(world_vocabulary(world), spec.kind)
    facts = model_facts(world, trained_packs(spec, world))
    check_single_token_targets(tokenizer, facts)
    g = make_generator(seed + (1000 if spec.base else 0) + (1 if spec.kind == "bert" else 0))
    base_facts = model_facts(world, [p for p in world.packs if p != TUNE_PACK])
    base_rows = encode_facts(tokenizer, base_facts)
    tune_rows = encode_facts(tokenizer, [f for f in facts if f.id.startswith(TUNE_PACK + "/")]) if spec.base else []
    if spec.base is None:
        model = init_model(spec.kind, tokenizer, seed)
    else:
        model = factworld_eval.load_model(out / spec.base)[0]
    log(f"{spec.name}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(base_rows)} base + {len(tune_rows)} tuning sentences")
    start = time.perf_counter()
    train_model(model, tokenizer, spec.kind, base_rows, tune_rows, spec.settings, g, log)
    seconds = time.perf_counter() - start
    factworld_eval.save_model_dir(out / spec.name, model, tokenizer, facts)
    report = factworld_eval.evaluate_dir(out / spec.name)
    factworld_eval.write_model_card(out / spec.name, report, info=_card_info(spec, world, seed, seconds))
    log(factworld_eval.format_report(report))


def _card_info(spec: ModelSpec, world: World, seed: int, seconds: float) -> dict:
    return {"name": spec.name, "kind": spec.kind, "base_model": spec.base, "seed": seed,
            "world": world.config.model_dump(), "trained_packs": trained_packs(spec, world),
            "tune_pack": TUNE_PACK if spec.base else None, "settings": spec.settings.model_dump(),
            "train_seconds": round(seconds, 1), "threads": torch.get_num_threads()}


def train_all(out: Path, *, seed: int = 0, only: Sequence[str] | None = None,
              log: Callable[[str], None] = lambda s: None) -> None:
    """Build the seed's world and train the models in :data:`SPECS` order into ``out/<name>/``."""
    names = [s.name for s in SPECS]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise InputError("only", f"unknown models {unknown}", fix=f"choose from {names}")
    world = build_world(WorldConfig(seed=seed))
    for spec in SPECS:
        if only is None or spec.name in only:
            train_one(spec, world, Path(out), seed, log)
