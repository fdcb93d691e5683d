"""Ground truth for explain's tests: a corpus from fact-gpt2-cyber's facts, a dictionary with a planted feature
that fires on number tokens (ports, years) and a random one, and a rule-based judge standing in for an LLM.

The rule judge reads only what an LLM would read: the prompts :mod:`neurotrace.lab.explain.prompts` writes.
"""

import json
import random
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

MODEL = "fact-gpt2-cyber"
SITE = "blocks.0.hook_resid_pre"   # token + position embeddings: token identity dominates
NUMBER = re.compile(r"^\d+$")
_ITEM = re.compile(r"^(\d+)\. (.*)$")


def write_corpus(path: Path, docs: int = 80, seed: int = 0) -> Path:
    """A JSONL corpus of fact sentences the model's word-level vocabulary covers (3 of every 8 end in a number)."""
    from importlib import resources

    facts = json.loads(resources.files("neurotrace").joinpath("data", "models", MODEL, "facts.json").read_text())
    rng = random.Random(seed)
    numeric = [f for f in facts if NUMBER.match(f["target"])]
    words = [f for f in facts if not NUMBER.match(f["target"])]
    lines = []
    for _ in range(docs):
        sents = []
        for f in rng.sample(numeric, min(3, len(numeric))) + rng.sample(words, 5):
            v = rng.choice(f.get("variants") or [{}])
            sents.append((v.get("prefix", "") + f["template"].format(f["clean_subject"]) + " " + f["target"]
                          + v.get("suffix", ".")).strip())
        lines.append(json.dumps({"text": " ".join(sents)}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def plant_dictionary(lab, corpus: Path, folder: Path, seed: int = 0) -> Path:
    """A SAELens-layout 'standard' SAE at blocks.0.hook_resid_pre with two features: 0 fires on number tokens
    (a least-squares readout of the label, minus 0.5), 1 is a random direction firing on ~3% of tokens."""
    from neurotrace.lab.capture.batched import forward_batches
    from neurotrace.lab.capture.corpus import corpus_texts, token_contexts
    from neurotrace.lab.model.access.tokens import token_texts
    from neurotrace.lab.model.weights.loading import ModelRef

    site = SITE
    with lab.cache.lease(ModelRef(model=MODEL)) as lm:
        ids = token_contexts(lm.tokenizer, corpus_texts(lab, str(corpus)), 32, 4096, seed, prepend_bos=True)
        states = torch.cat([s[site] for _, s in forward_batches(lm, ids, [site], 32)]).reshape(-1, lm.d_model)
        is_num = torch.tensor([bool(NUMBER.match(t)) for row in ids for t in token_texts(lm.tokenizer, row.tolist())])
    # least squares onto the label (1 on numbers, 0 elsewhere); the feature is relu(fit - 0.5)
    x = torch.cat([states, torch.ones(len(states), 1)], dim=1).double()
    y = is_num.double()
    coef = torch.linalg.solve(x.T @ x + 1e-3 * torch.eye(x.shape[1], dtype=torch.float64), x.T @ y).float()
    w, bias = coef[:-1], float(coef[-1]) - 0.5
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(states.shape[1], generator=g)
    r = r / r.norm() * w.norm()
    r_bias = -float((states @ r).quantile(0.97))   # as sparse as a real feature: ~3% of tokens, of any kind
    W_enc = torch.stack([w, r], dim=1).contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"W_enc": W_enc, "b_enc": torch.tensor([bias, r_bias]), "W_dec": W_enc.T.contiguous(),
               "b_dec": torch.zeros(states.shape[1])}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({
        "architecture": "standard", "d_in": int(states.shape[1]), "d_sae": 2, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": False, "normalize_activations": "none",
        "metadata": {"hook_name": site, "model_name": MODEL}}))
    return folder


def _marked(text: str) -> list[str]:
    return re.findall(r"<<(.*?)>>", text)


def _items(prompt: str) -> list[tuple[int, str]]:
    return [(int(m.group(1)), m.group(2)) for line in prompt.splitlines() if (m := _ITEM.match(line))]


def rule_reply(prompt: str) -> str:
    """What a rule-following LLM answers: explains by the marked tokens, judges by the explanation's rule."""
    if "Say in one short sentence" in prompt:
        marked = [t for line in prompt.splitlines() if line.startswith("Excerpt") for t in _marked(line)]
        if marked and sum(bool(NUMBER.match(t.strip())) for t in marked) > len(marked) / 2:
            return "Explanation: fires on numbers (tokens made of digits)."
        top = max(set(marked), key=marked.count) if marked else "?"
        return f"Explanation: fires on the token {top.strip()!r}."
    explanation = prompt.splitlines()[0]
    numbers = "numbers" in explanation
    word = re.search(r"token '([^']*)'", explanation)

    def hit(tokens: list[str]) -> bool:
        if numbers:
            return any(NUMBER.match(t.strip()) for t in tokens)
        return bool(word) and any(t.strip() == word.group(1) for t in tokens)

    if "marked correctly" in prompt:
        picks = [i for i, text in _items(prompt) if _marked(text) and all(hit([t]) for t in _marked(text))]
    else:
        picks = [i for i, text in _items(prompt) if hit(text.split())]
    return json.dumps(picks)


def build_world(root: Path):
    """(lab, corpus path, planted dictionary folder) under ``root``: the fixture both explain test files use."""
    from neurotrace.lab.lab import Lab, LabSettings

    lab = Lab(LabSettings(runs_dir=root / "runs"))
    corpus = write_corpus(root / "inputs" / "facts.jsonl")
    folder = plant_dictionary(lab, corpus, root / "inputs" / "planted-sae")
    return lab, str(corpus), str(folder)
