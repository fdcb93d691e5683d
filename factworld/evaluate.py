"""Saving, loading, evaluating and documenting the embedded fact-world models.

A model directory is a standard Hugging Face directory plus two records of what it knows::

    config.json  model.safetensors  tokenizer.json  tokenizer_config.json   (save_pretrained)
    facts.json        every world + pack fact, held_out=True where the model never saw it
    model_card.md     architecture, data, seed, reproduce command, measured accuracy
    model_card.json   the same, machine-readable

Evaluation loads the directory exactly as a hub model would be loaded
(``AutoModelForCausalLM``/``AutoModelForMaskedLM`` + ``AutoTokenizer``) and asks every prompt of every
fact (plain prompt + each variant). A causal LM is right if its top-1 next token after the prompt
is the target; a masked LM is right if its top-1 token at ``[MASK]`` in
``prompt + " [MASK]" + suffix`` is the target. Accuracy is over prompts, not facts.
"""

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import torch
import transformers
from pydantic import BaseModel, ConfigDict, Field
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedModel,
)

from factworld.world import fact_pack, prompt_options
from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.facts.packs import MODEL_FACTS_FILE, load_facts
from neurotrace.lab.model.access.wordlevel import save_tokenizer

REPRODUCE = "python -m factworld train --out neurotrace/data/models"


class GroupAccuracy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    accuracy: Annotated[float, Field(ge=0, le=1, description="Top-1 accuracy over the group's prompts, 0..1.")]
    n_prompts: Annotated[int, Field(ge=0, description="Prompts asked (facts x prompt options).")]
    trained: bool = Field(description="True if the model was trained on this group's facts.")


class EvalReport(BaseModel):
    """Measured accuracy of one model directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(description="Directory name, e.g. 'fact-gpt2'.")
    kind: str = Field(description="'gpt2' (causal LM) or 'bert' (masked LM).")
    trained: GroupAccuracy = Field(description="All prompts of facts the model was trained on.")
    held_out: GroupAccuracy = Field(description="All prompts of facts kept out of training.")
    held_out_chance: float = Field(description="Accuracy of guessing uniformly among the relation's answers.")
    trained_alt: GroupAccuracy = Field(description="Trained prompts again, gpt2: with a leading "
                                                   "<|endoftext|>; bert: without [CLS]/[SEP].")
    per_pack: dict[str, GroupAccuracy] = Field(description="By pack ('world' = generated relations); "
                                                           "held-out world facts excluded.")


# ----------------------------------------------------------------------------- directories


def load_model(directory: Path) -> tuple[PreTrainedModel, object, str]:
    """``(model, tokenizer, kind)`` loaded through the Auto classes, in eval mode."""
    directory = Path(directory)
    kind = "gpt2" if AutoConfig.from_pretrained(directory).model_type == "gpt2" else "bert"
    auto = AutoModelForCausalLM if kind == "gpt2" else AutoModelForMaskedLM
    model = auto.from_pretrained(directory)
    model.eval()
    return model, AutoTokenizer.from_pretrained(directory), kind


def save_model_dir(directory: Path, model: PreTrainedModel, tokenizer, facts: Sequence[Fact]) -> None:
    """Write weights + config, tokenizer files (portable class name) and ``facts.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    save_tokenizer(tokenizer, directory)
    rows = ",\n".join(json.dumps(f.model_dump(mode="json"), ensure_ascii=False) for f in facts)
    (directory / MODEL_FACTS_FILE).write_text(f"[\n{rows}\n]\n", encoding="utf-8")  # one fact per line


# ----------------------------------------------------------------------------- evaluation


def _prompts(facts: Sequence[Fact], kind: str, mask_token: str | None) -> list[tuple[Fact, str]]:
    """(fact, text) for every prompt option; a masked-LM text holds the mask and the suffix."""
    out = []
    for fact in facts:
        seen = set()
        for v in prompt_options(fact):
            text = fact.prompt(variant=v) if kind == "gpt2" else f"{fact.prompt(variant=v)} {mask_token}{v.suffix}"
            if text not in seen:
                seen.add(text)
                out.append((fact, text))
    return out


@torch.no_grad()
def predict(model: PreTrainedModel, tokenizer, kind: str, texts: Sequence[str], *, alt: bool = False,
            batch_size: int = 256) -> list[int]:
    """Top-1 token id at the answer slot of each text (gpt2: after the prompt; bert: at [MASK]).

    ``alt`` flips the special-token convention: gpt2 gets a leading BOS, bert loses [CLS]/[SEP].
    """
    out: list[int] = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        if kind == "gpt2":
            chunk = [tokenizer.bos_token + t for t in chunk] if alt else chunk
            enc = tokenizer(chunk, padding=True, add_special_tokens=False, return_tensors="pt")
            pos = enc["attention_mask"].sum(dim=1) - 1                   # (batch,) last real token
        else:
            enc = tokenizer(chunk, padding=True, add_special_tokens=not alt, return_tensors="pt")
            pos = (enc["input_ids"] == tokenizer.mask_token_id).int().argmax(dim=1)
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits  # (batch, pos, vocab)
        out += logits[torch.arange(len(chunk)), pos].argmax(dim=-1).tolist()
    return out


def _accuracy(hits: list[bool], trained: bool) -> GroupAccuracy:
    return GroupAccuracy(accuracy=sum(hits) / len(hits) if hits else 0.0, n_prompts=len(hits), trained=trained)


def _chance(facts: Sequence[Fact], asked: Sequence[Fact]) -> float:
    answers: dict[tuple[str, str], set[str]] = defaultdict(set)
    for f in facts:
        answers[fact_pack(f), f.relation].add(f.target)
    return sum(1 / len(answers[fact_pack(f), f.relation]) for f in asked) / max(1, len(asked))


def evaluate(model: PreTrainedModel, tokenizer, kind: str, facts: Sequence[Fact], name: str = "") -> EvalReport:
    """Accuracy of ``model`` on every prompt of ``facts`` (trained, held out, per pack, alt specials)."""
    asked = _prompts(facts, kind, tokenizer.mask_token if kind == "bert" else None)
    targets = [tokenizer(" " + f.target, add_special_tokens=False)["input_ids"][0] for f, _ in asked]
    texts = [t for _, t in asked]
    hits = [p == t for p, t in zip(predict(model, tokenizer, kind, texts), targets, strict=True)]
    train_idx = [i for i, (f, _) in enumerate(asked) if not f.held_out]
    held_idx = [i for i, (f, _) in enumerate(asked) if f.held_out]
    alt = predict(model, tokenizer, kind, [texts[i] for i in train_idx], alt=True)
    per_pack: dict[str, list[bool]] = defaultdict(list)
    pack_trained: dict[str, bool] = {}
    for i, (f, _) in enumerate(asked):
        pack = fact_pack(f)
        if pack == "world" and f.held_out:
            continue
        per_pack[pack].append(hits[i])
        pack_trained[pack] = not f.held_out
    return EvalReport(
        model=name, kind=kind,
        trained=_accuracy([hits[i] for i in train_idx], True),
        held_out=_accuracy([hits[i] for i in held_idx], False),
        held_out_chance=_chance(facts, [asked[i][0] for i in held_idx]),
        trained_alt=_accuracy([a == targets[i] for a, i in zip(alt, train_idx, strict=True)], True),
        per_pack={p: _accuracy(h, pack_trained[p]) for p, h in sorted(per_pack.items())})


def evaluate_dir(directory: Path) -> EvalReport:
    """Load a model directory through the Auto classes and evaluate it on its ``facts.json``."""
    model, tokenizer, kind = load_model(directory)
    return evaluate(model, tokenizer, kind, load_facts(directory), name=Path(directory).name)


def format_report(report: EvalReport) -> str:
    """A short human-readable table of an :class:`EvalReport`."""
    alt = "with a leading <|endoftext|>" if report.kind == "gpt2" else "without [CLS]/[SEP]"
    lines = [f"{report.model} ({report.kind})",
             f"  trained facts   {report.trained.accuracy:7.1%}  ({report.trained.n_prompts} prompts)",
             f"  held-out facts  {report.held_out.accuracy:7.1%}  ({report.held_out.n_prompts} prompts; "
             f"chance {report.held_out_chance:.1%})",
             f"  trained, {alt}: {report.trained_alt.accuracy:.1%}"]
    for pack, acc in report.per_pack.items():
        tag = "" if acc.trained else "  (not trained)"
        lines.append(f"  pack {pack:<14} {acc.accuracy:7.1%}  ({acc.n_prompts} prompts){tag}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- bridge + card


def check_bridge(directory: Path, n_prompts: int = 24) -> str:
    """Try ``TransformerBridge.boot_transformers`` on the directory; one line saying what happened."""
    from transformer_lens.model_bridge import TransformerBridge  # noqa: PLC0415  (heavy, optional)

    try:
        bridge = TransformerBridge.boot_transformers(str(directory), device="cpu")
        model, tokenizer, kind = load_model(directory)
        facts = [f for f in load_facts(directory) if not f.held_out][:n_prompts]
        mask = f" {tokenizer.mask_token}" if kind == "bert" else ""
        hits = 0
        for f in facts:
            logits = bridge(f.prompt() + mask)                                  # (1, pos, vocab)
            tokens = bridge.to_tokens(f.prompt() + mask)
            pos = -1 if kind == "gpt2" else int((tokens[0] == tokenizer.mask_token_id).nonzero()[0, 0])
            hits += int(logits[0, pos].argmax()) == tokenizer(" " + f.target, add_special_tokens=False)["input_ids"][0]
        bos = "prepends <|endoftext|>" if kind == "gpt2" else "adds no [CLS]/[SEP]"
        return (f"loads with TransformerBridge.boot_transformers ({bridge.cfg.n_layers} layers, "
                f"d_model {bridge.cfg.d_model}); its to_tokens {bos}; top-1 on {len(facts)} trained "
                f"plain prompts through the bridge: {hits}/{len(facts)}")
    except Exception as err:  # noqa: BLE001  -- the card records whatever the bridge does
        return f"TransformerBridge.boot_transformers failed: {type(err).__name__}: {err}"


def write_model_card(directory: Path, report: EvalReport, info: dict) -> None:
    """Write ``model_card.json`` and ``model_card.md`` from the training info and measured report."""
    directory = Path(directory)
    config = AutoConfig.from_pretrained(directory).to_dict()
    keys = ("architectures", "model_type", "vocab_size", "n_layer", "n_embd", "n_head", "n_inner", "n_positions",
            "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "max_position_embeddings")
    size = (directory / "model.safetensors").stat().st_size
    card = {**info, "architecture": {k: config[k] for k in keys if k in config},
            "weights_bytes": size, "reproduce": REPRODUCE,
            "evaluate": f"python -m factworld evaluate neurotrace/data/models/{directory.name}",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "bridge": check_bridge(directory), "accuracy": report.model_dump()}
    (directory / "model_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (directory / "model_card.md").write_text(_card_markdown(card, report), encoding="utf-8")


def _card_markdown(card: dict, report: EvalReport) -> str:
    arch = ", ".join(f"{k}={v}" for k, v in card["architecture"].items() if k != "architectures")
    data = ("the generated world relations (capital_of, language_of, currency_of, continent_of of "
            f"{card['world']['n_countries']} fictional countries, 3-4 phrasings each, "
            f"~{card['world']['held_out_fraction']:.0%} of (country, relation) pairs held out) "
            f"and the packs {', '.join(card['trained_packs'])}")
    tuned = (f" Tuned from `{card['base_model']}` on the `{card['tune_pack']}` pack with replay of base data "
             f"({card['settings']['tune_fraction']:.0%} of each batch new pack sentences)." if card["base_model"] else "")
    s = card["settings"]
    return f"""# {card['name']}

A small {card['architecture']['architectures'][0]} trained from scratch inside neurotrace so fact-tracing
tools run offline. Word-level tokenizer (one token per word; every fact target is a single token).

* **Architecture:** {arch}; {card['weights_bytes'] / 1e6:.2f} MB of float32 weights, no dropout.
* **Training data:** {data}.{tuned}
* **Training:** {s['steps']} AdamW steps, batch {s['batch_size']}, peak lr {s['lr']}, warm-up {s['warmup']},
  cosine decay; seed {card['seed']}; {card['threads']} CPU thread(s), {card['train_seconds']} s.
* **Reproduce:** `{card['reproduce']}` (trains all four fact-world models; deterministic on CPU).
* **Evaluate:** `{card['evaluate']}`
* **TransformerLens:** {card['bridge']}.
* **Versions:** torch {card['versions']['torch']}, transformers {card['versions']['transformers']}.

## Measured accuracy (top-1, every prompt of every fact)

```
{format_report(report)}
```

Held-out facts were never in the training data; their accuracy is expected to be near chance.
`facts.json` lists every fact with `held_out` set, so tools can pick known and unknown facts.
"""
