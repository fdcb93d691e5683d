"""A planted-circuit transformer: a GPT-2 whose fact recall runs through a known route, set by hand.

Prompts are "the capital of <country> is" and the answer is the country's capital. The residual
stream (d_model 64) is split into subspaces: dims 0..39 hold one-hot token identities (the token
embedding of token id t is e_t; no position embeddings), dims 40..44 hold one "attribute" direction
per capital. Every weight is zero except:

* **MLP of layer 1** (the planted MLP): one hidden unit per country reads that country's token
  dimension (gain 1, bias -2, so it fires only on that token) and writes +1 to its capital's attribute
  direction. At the last subject token it therefore writes the answer into the residual stream.
* **Head 0 of layer 2** (the planted head): the query reads the token "is"; the key sums the
  attribute directions, so the final position attends to the position where the MLP wrote; the value
  copies the attribute directions and the output projection writes them (gain 2) at the final
  position.
* **Unembedding** (untied): each capital's logit reads its attribute direction (gain 2).

Layer 0, the other head and the other MLPs are exactly zero (LayerNorms are identity-scaled), so the
only route from the subject to the answer is MLP 1 at the subject position -> head 2.0 -> final
position. Corrupting the subject's embedding with noise breaks the MLP's detection; restoring the MLP
output of layer 1 at the last subject token, or the head's output at the final position, restores it.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from neurotrace.lab.facts_model import Fact

COUNTRIES = ("france", "spain", "italy", "germany", "japan")
CAPITALS = ("paris", "madrid", "rome", "berlin", "tokyo")
TEMPLATE = "the capital of {} is"
D_MODEL, N_LAYER, N_HEAD, D_MLP, ATTR0 = 64, 3, 2, 32, 40
MLP_LAYER, HEAD_LAYER, HEAD = 1, 2, 0


@dataclass(frozen=True)
class PlantedModel:
    path: Path
    facts: tuple[Fact, ...]
    mlp_layer: int = MLP_LAYER
    head_layer: int = HEAD_LAYER
    head: int = HEAD
    subject_last_pos: int = 3     # "the capital of <country> is": the country is token 3
    final_pos: int = 4

    @property
    def fact(self) -> Fact:
        return self.facts[0]


def planted_facts() -> tuple[Fact, ...]:
    return tuple(Fact(id=f"planted/{c}", relation="capital_of", template=TEMPLATE, clean_subject=c,
                      corrupt_subject=COUNTRIES[(i + 1) % len(COUNTRIES)], target=CAPITALS[i])
                 for i, c in enumerate(COUNTRIES))


def build_planted(out_dir: Path | str) -> PlantedModel:
    """Write the planted model (standard HF directory) to ``out_dir``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from neurotrace.lab.tiny import build_tokenizer

    tok = build_tokenizer("causal", ["the", "capital", "of", "is", *COUNTRIES, *CAPITALS])
    vocab = tok.get_vocab()
    config = GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=D_MODEL, n_layer=N_LAYER, n_head=N_HEAD,
                        n_inner=D_MLP, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" not in name:
                p.zero_()
        wte = model.transformer.wte.weight
        for t in range(len(tok)):
            wte[t, t] = 1.0
        mlp = model.transformer.h[MLP_LAYER].mlp
        for j, (country, capital) in enumerate(zip(COUNTRIES, CAPITALS, strict=True)):
            mlp.c_fc.weight[vocab[country], j] = 1.0                 # Conv1D weights are (in, out)
            mlp.c_fc.bias[j] = -2.0
            mlp.c_proj.weight[j, ATTR0 + j] = 1.0
            model.lm_head.weight[vocab[capital], ATTR0 + j] = 2.0
        attn = model.transformer.h[HEAD_LAYER].attn
        d_head = D_MODEL // N_HEAD
        q0, k0, v0 = HEAD * d_head, D_MODEL + HEAD * d_head, 2 * D_MODEL + HEAD * d_head
        attn.c_attn.weight[vocab["is"], q0] = 1.0
        for j in range(len(CAPITALS)):
            attn.c_attn.weight[ATTR0 + j, k0] = 1.0
            attn.c_attn.weight[ATTR0 + j, v0 + j] = 1.0
            attn.c_proj.weight[HEAD * d_head + j, ATTR0 + j] = 2.0
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return PlantedModel(path=out, facts=planted_facts())
