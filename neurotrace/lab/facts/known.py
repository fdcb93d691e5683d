"""Which facts does a model know? Re-measure the per-model ``known`` flags a pack records.

A model *knows* a fact when its greedy next token after the clean prompt is the fact's scored target
token (the first token ``prompt + " " + target`` adds; :mod:`neurotrace.lab.model.access.tokens`). The flags
in ``neurotrace/data/packs/*.json`` were recorded with::

    neurotrace packs measure known-facts --models gemma-3-270m,smollm2-135m-instruct --write

which loads each model through the lab (catalog names, directories or .gguf files), scores every fact
in batches of right-padded prompts, and (with ``--write``) rewrites the pack file atomically with the
new flags. Tools read the flags as documentation; ``trace`` still checks each fact itself.
"""

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.facts.packs import FactPack, load_pack, pack_path
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.tokens import target_token_ids
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter

BATCH = 16


@torch.no_grad()
def knows(lm: LoadedModel, facts: Sequence[Fact], reporter: Reporter = NULL_REPORTER) -> list[tuple[bool, float]]:
    """(top-1 == target token, p(target token)) of every fact's clean prompt, in order."""
    tok, out = lm.tokenizer, []
    for start in range(0, len(facts), BATCH):
        chunk = list(facts[start:start + BATCH])
        enc = tok([f.prompt() for f in chunk], return_tensors="pt", padding=True, padding_side="right")
        logits = lm.model(**{k: v.to(lm.device) for k, v in enc.items()}).logits   # (B, T, V)
        last = enc["attention_mask"].sum(1) - 1                                      # (B,)
        probs = logits[torch.arange(len(chunk)), last.to(lm.device)].float().softmax(-1)
        for fact, row in zip(chunk, probs, strict=True):
            target = target_token_ids(tok, fact.prompt(), fact.target)[0]
            out.append((int(row.argmax()) == target, float(row[target])))
        reporter.step(min(start + BATCH, len(facts)), len(facts), f"{lm.ref.model}: scoring facts")
    return out


def measure_pack(pack: FactPack, models: Sequence[str], lab: Lab,
                 reporter: Reporter = NULL_REPORTER) -> FactPack:
    """``pack`` with every fact's ``known`` flags re-measured for ``models`` (other models' flags kept)."""
    flags: dict[str, dict[str, bool]] = {f.id: dict(f.known) for f in pack.facts}
    for name in models:
        with lab.cache.lease(ModelRef(model=name)) as lm:
            for fact, (known, _) in zip(pack.facts, knows(lm, pack.facts, reporter), strict=True):
                flags[fact.id][name] = known
    facts = [f.model_copy(update={"known": flags[f.id]}) for f in pack.facts]
    return pack.model_copy(update={"facts": facts})


def write_pack(pack: FactPack, path: Path | None = None) -> Path:
    """Write ``pack`` as JSON (one fact per line block, like the shipped packs), atomically."""
    path = path or pack_path(pack.domain)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(pack.model_dump(mode="json", exclude_defaults=True), indent=2, ensure_ascii=False)
                   + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def known_counts(domain: str) -> dict[str, int]:
    """How many of a built-in pack's facts each measured model knows."""
    counts: dict[str, int] = {}
    for fact in load_pack(domain).facts:
        for model, known in fact.known.items():
            counts[model] = counts.get(model, 0) + int(known)
    return counts
