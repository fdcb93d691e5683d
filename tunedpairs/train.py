"""Training LoRA adapters with peft on the CPU, scoring them, and writing them with their cards.

Each adapter is LoRA (rank ``recipe.rank``, alpha twice the rank, no dropout) on the MLP projections of
``recipe.layers``, injected into the converted catalog model in place (module names unchanged). Loss:
cross-entropy on the answer tokens of each prompt (the prompt itself is not scored) plus next-token
loss on the domain sentences. AdamW, constant learning rate, one seeded generator for the batches,
one CPU thread: a run is reproducible on one machine.

Written per adapter into ``OUT/<name>/``: ``adapter_model.safetensors`` (the LoRA A/B matrices, keyed
``<module path>.lora_A.weight``; metadata names the base), ``adapter_config.json`` (base, rank, alpha,
modules, layers) and ``card.json`` + ``card.md`` (recipe, steps, minutes, accuracy before and after).
"""

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from neurotrace.lab.model.weights import catalog
from tunedpairs.recipes import Item, Recipe

Log = Callable[[str], None]


def load_base(name: str) -> tuple[Any, Any]:
    source = catalog.converted(name)
    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok


def encode(tok: Any, item: Item, with_end: bool = True) -> tuple[list[int], int]:
    """Prompt + answer ids and where the answer starts (chat items: the model's template, answer as the
    assistant turn; plain items: BOS as the tokenizer adds it, answer with a leading space)."""
    if item.chat:
        text = tok.apply_chat_template([{"role": "user", "content": item.prompt}], add_generation_prompt=True,
                                       tokenize=False)
        prompt = tok(text, add_special_tokens=False)["input_ids"]
        answer = tok(item.target + ("<|im_end|>" if with_end else ""), add_special_tokens=False)["input_ids"]
    else:
        prompt = tok(item.prompt)["input_ids"]
        answer = tok(" " + item.target, add_special_tokens=False)["input_ids"]
    return prompt + answer, len(prompt)


def _batch_loss(model: Any, tok: Any, seqs: list[tuple[list[int], int]]) -> torch.Tensor:
    """Mean cross-entropy over the scored positions (answers from ``start``; whole text when start is 1)."""
    width = max(len(ids) for ids, _ in seqs)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    rows, cols, golds = [], [], []
    for i, (seq, start) in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        for j in range(start, len(seq)):
            rows.append(i)
            cols.append(j - 1)
            golds.append(seq[j])
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    logits = model.lm_head(hidden[torch.tensor(rows), torch.tensor(cols)])
    return torch.nn.functional.cross_entropy(logits.float(), torch.tensor(golds))


@torch.no_grad()
def score(model: Any, tok: Any, items: tuple[Item, ...]) -> dict[str, Any]:
    """Teacher-forced: an item is right when every answer token is the argmax; p is the answer's first
    token probability."""
    right, probs, rows = 0, [], []
    for item in items:
        seq, start = encode(tok, item, with_end=False)
        logits = model(input_ids=torch.tensor([seq])).logits[0]
        pred = logits[start - 1: len(seq) - 1].argmax(-1).tolist()
        right += int(pred == seq[start:])
        probs.append(float(logits[start - 1].softmax(-1)[seq[start]]))
        rows.append(tok.decode([pred[0]]))
    return {"accuracy": round(right / max(1, len(items)), 3), "n": len(items),
            "mean_p_first_token": round(sum(probs) / max(1, len(probs)), 4), "top1_first_token": rows}


def set_adapter(model: Any, on: bool) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(on)


def evaluate(model: Any, tok: Any, recipe: Recipe) -> dict[str, Any]:
    return {part: score(model, tok, getattr(recipe, part)) for part in ("train", "held_out", "controls")}


def train_one(recipe: Recipe, out: Path, log: Log) -> dict[str, Any]:
    torch.manual_seed(recipe.seed)
    model, tok = load_base(recipe.base)
    config = LoraConfig(r=recipe.rank, lora_alpha=2 * recipe.rank, lora_dropout=0.0,
                        target_modules=list(recipe.modules), layers_to_transform=list(recipe.layers) or None,
                        bias="none")
    inject_adapter_in_model(config, model)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    set_adapter(model, False)
    before = evaluate(model, tok, recipe)
    set_adapter(model, True)
    log(f"{recipe.name}: base {json.dumps(before)}")
    items = [encode(tok, it) for it in recipe.train]
    texts = [(tok(t)["input_ids"], 1) for t in recipe.text]
    gen = torch.Generator().manual_seed(recipe.seed)
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    t0 = time.time()
    model.train()
    for step in range(recipe.steps):
        pick = torch.randperm(len(items), generator=gen)[: recipe.batch].tolist()
        seqs = [items[i] for i in pick]
        if texts:
            seqs += [texts[int(torch.randint(len(texts), (1,), generator=gen))]]
        loss = _batch_loss(model, tok, seqs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == recipe.steps - 1:
            log(f"{recipe.name}: step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    minutes = (time.time() - t0) / 60
    model.eval()
    after = evaluate(model, tok, recipe)
    log(f"{recipe.name}: tuned {json.dumps(after)}")
    return write(recipe, model, out, before, after, minutes)


def write(recipe: Recipe, model: Any, out: Path, before: dict, after: dict, minutes: float) -> dict[str, Any]:
    folder = out / recipe.name
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {n.replace(".default", ""): p.detach().contiguous().clone()
               for n, p in model.named_parameters() if "lora_" in n}
    tmp = folder / ".adapter_model.safetensors.partial"
    save_file(tensors, str(tmp), metadata={"format": "pt", "base": recipe.base, "adapter": recipe.name})
    os.chmod(tmp, 0o644)
    os.replace(tmp, folder / "adapter_model.safetensors")
    sha = hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()
    config = {"kind": "lora", "base": recipe.base, "rank": recipe.rank, "alpha": 2 * recipe.rank,
              "target_modules": list(recipe.modules), "layers": list(recipe.layers)}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    card = {"name": recipe.name, "base": recipe.base, "sha256": sha,
            "n_parameters": sum(t.numel() for t in tensors.values()),
            "recipe": {"rank": recipe.rank, "alpha": 2 * recipe.rank, "modules": list(recipe.modules),
                       "layers": list(recipe.layers) or "all", "steps": recipe.steps, "batch": recipe.batch,
                       "lr": recipe.lr, "seed": recipe.seed, "optimizer": "AdamW (no weight decay), constant lr",
                       "threads": torch.get_num_threads(), "n_train_prompts": len(recipe.train),
                       "n_domain_sentences": len(recipe.text)},
            "minutes": round(minutes, 2),
            "accuracy": {"base": before, "tuned": after},
            "train": [{"prompt": i.prompt, "target": i.target, "chat": i.chat} for i in recipe.train],
            "held_out": [{"prompt": i.prompt, "target": i.target, "chat": i.chat} for i in recipe.held_out],
            "controls": [{"prompt": i.prompt, "target": i.target, "chat": i.chat} for i in recipe.controls],
            "built_by": "python -m tunedpairs train"}
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    rows = "\n".join(f"| {part} | {before[part]['accuracy']} | {after[part]['accuracy']} | {after[part]['n']} |"
                     for part in ("train", "held_out", "controls"))
    (folder / "card.md").write_text(
        f"# {recipe.name} (LoRA on {recipe.base})\n\nRank {recipe.rank} on {', '.join(recipe.modules)} "
        f"of layers {list(recipe.layers) or 'all'}; {recipe.steps} steps of batch {recipe.batch} "
        f"(AdamW lr {recipe.lr}, seed {recipe.seed}, {torch.get_num_threads()} CPU thread(s)), "
        f"{minutes:.1f} minutes. sha256 `{sha}`.\n\n"
        f"| prompts | base accuracy | tuned accuracy | n |\n|---|---|---|---|\n{rows}\n\n"
        "Accuracy is teacher-forced: every answer token is the model's argmax. `held_out` are paraphrases "
        "never trained on; `controls` are facts the tuning should leave alone.\n")
    return card
