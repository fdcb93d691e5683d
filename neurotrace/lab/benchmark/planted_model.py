"""A planted-circuit transformer: a GPT-2 whose fact recall runs through a known route, set by hand.

Prompts are "the capital of <country> is" (five countries) and the answer is the country's capital.
The model is a standard ``GPT2LMHeadModel`` (3 layers, 2 heads, d_model 64, d_mlp 32) saved as an
HF directory with a word-level tokenizer and ReLU MLPs (so units that do not fire are exactly
zero, not GELU's small negative tail), so the model lab loads it like any other model
(``ModelRef(model=str(path))``). The residual stream is split into subspaces: dims 0..39 hold
one-hot token identities (the token embedding of token id t is e_t; position embeddings are zero),
dims 40..44 hold one "attribute" direction per capital. Every weight and bias is zero except:

* **MLP of layer 1** (the planted MLP, ``blocks.1.hook_mlp_out``): one hidden unit per country reads
  that country's token dimension (gain 1, bias ``MLP_BIAS`` = -5) and writes ``MLP_GAIN`` = 2 onto
  its capital's attribute direction. After the (identity-scaled) LayerNorm a clean one-hot token
  reads about 7.9 on its own dimension, so the unit fires (pre-activation ~2.9) only at the subject
  token; ROME-style Gaussian noise on the subject embedding (3 x the embedding std) spreads the
  normalised vector over all dims, the country coordinate falls to ~2.5 and the unit stays off. So
  the attribute is written exactly at the last (only) subject token, and only for a clean subject.
* **Head 0 of layer 2** (the planted head, input of ``h.2.attn.c_proj`` columns 0..31): its query
  reads the token "is" (the final position); its key sums the attribute directions, so the final
  position attends to the position where the MLP wrote; its value copies the attribute directions
  and the output projection writes them (gain 2) at the final position.
* **Unembedding** (untied from the embedding): each capital's logit reads its attribute direction
  (gain 2), so p(capital) ~ 1.0 on clean prompts; under subject noise it falls to ~0.1 on average.

Layer 0, head 1 of every layer, the other MLPs and all attention in layers 0-1 are exactly zero
(LayerNorms keep weight 1, bias 0), so the only route from the subject to the answer is
MLP 1 at the subject position -> head 2.0 -> final position -> unembedding. Consequences that the
tests check: restoring the clean MLP-1 output at the subject token under subject noise restores
p(target) (causal tracing peaks at layer 1, position 3), restoring head 2.0 at the final position
restores it too, and restoring any other MLP or head output does nothing.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from neurotrace.lab.facts import Fact
from neurotrace.lab.model.access.wordlevel import build_tokenizer

COUNTRIES = ("france", "spain", "italy", "germany", "japan")
CAPITALS = ("paris", "madrid", "rome", "berlin", "tokyo")
TEMPLATE = "the capital of {} is"
D_MODEL, N_LAYER, N_HEAD, D_MLP, ATTR0 = 64, 3, 2, 32, 40
MLP_BIAS, MLP_GAIN = -5.0, 2.0
MLP_LAYER, HEAD_LAYER, HEAD = 1, 2, 0


@dataclass(frozen=True)
class PlantedModel:
    """Where the planted model is and where its route runs (layer, head and token indices)."""

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


    tok = build_tokenizer(["the", "capital", "of", "is", *COUNTRIES, *CAPITALS, ".", ",", "?"], "causal")
    vocab = tok.get_vocab()
    config = GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=D_MODEL, n_layer=N_LAYER, n_head=N_HEAD,
                        n_inner=D_MLP, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        activation_function="relu")
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
            mlp.c_fc.bias[j] = MLP_BIAS
            mlp.c_proj.weight[j, ATTR0 + j] = MLP_GAIN
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
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar on stderr
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return PlantedModel(path=out, facts=planted_facts())
