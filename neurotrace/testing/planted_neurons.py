"""A tiny GPT-2 whose neurons, attention and unembedding are set by hand: ground truth for find_neurons,
probe and steer (and the ``investigate`` protocol end to end).

Construction (``d_model = 88`` for the 84-token word vocabulary; the residual is one-hot in the token):

* ``wte[t] = e_t``; positions are zero. The unembedding reads the successor map, ``W_U[succ(u), u] =
  scale(u)``: greedy decoding counts through the vocabulary. ``scale`` is ``UNCERTAIN_SCALE`` for the
  function words (the model is unsure what follows "the", p(top) ~ 0.2) and ``CONFIDENT_SCALE`` for
  every other token (p(top) ~ 1).
* Layer 0 attention is uniform (zero queries and keys) and its values copy ``+1`` for 'fish' and
  ``-1`` for 'cat' onto the spare dimension ``PROBE_DIM``: from ``blocks.1.hook_resid_pre`` on, the last
  position holds ``(n_fish - n_cat) / n_tokens`` there, so "fish or cat in the prompt?" is linearly
  readable at layer 1 and not at layer 0 (whose last position is only the last token).
* Neuron ``CONCEPT_NEURON`` (0:5) fires (about 3.5) only on the token 'fish'; it writes nothing.
* Neuron ``LOOP_NEURON`` (1:3) fires on 'moon' and 'star' and writes ``e_moon`` strongly into the
  residual, so the model emits succ(moon) = 'star' forever: prompts ending in 'moon' collapse into
  "star star star ...", clamping 1:3 to 0 lets them count again.
* Every other neuron has seeded random input weights (so it varies across tokens) and writes nothing.
* Steering: the difference of means of the residual between prompts ending in 'fish' and in 'cat'
  is ``e_fish - e_cat`` (plus a little of ``PROBE_DIM``), which the unembedding maps to
  ``STEER_TARGET`` = succ(fish) = 'tree'. Added to prompts ending in an uncertain function word it
  raises p('tree') toward 1; on prompts ending in a confident token it barely moves p('tree').
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from neurotrace.testing.planted_clamp import successor
from neurotrace.testing.tiny import tiny_tokenizer

UNCERTAIN = ("the", "a", "of", "in", "is", "was", "to", "and")
UNCERTAIN_SCALE = 0.3
CONFIDENT_SCALE = 3.0
PROBE_DIM = 84
CONCEPT_NEURON = "0:5"
LOOP_NEURON = "1:3"
STEER_TARGET = "tree"


@dataclass(frozen=True)
class Planted:
    path: Path
    concept_neuron: str = CONCEPT_NEURON
    loop_neuron: str = LOOP_NEURON
    steer_target: str = STEER_TARGET
    probe_layer: int = 1


@torch.no_grad()
def build_planted_neurons(out_dir: Path | str, *, d_mlp: int = 16, seed: int = 0) -> Planted:
    """Write the planted model + word-level tokenizer to ``out_dir`` (see the module docstring)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    tok = tiny_tokenizer("causal")
    vocab, d_model = len(tok), 88
    ids = tok.convert_tokens_to_ids
    config = GPT2Config(vocab_size=vocab, n_positions=128, n_embd=d_model, n_layer=2, n_head=4, n_inner=d_mlp,
                        bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    model = GPT2LMHeadModel(config).eval()
    for p in model.parameters():
        p.zero_()
    t = model.transformer
    t.wte.weight[:, :vocab] = torch.eye(vocab)
    t.ln_f.weight.fill_(1.0)
    g = torch.Generator().manual_seed(seed)
    for block in t.h:
        block.ln_1.weight.fill_(1.0)
        block.ln_2.weight.fill_(1.0)
        block.mlp.c_fc.weight[:vocab] = 0.3 * torch.randn(vocab, d_mlp, generator=g)   # Conv1D: (in, out)
    lnv = (vocab - 1) ** 0.5                            # LayerNorm of a one-hot vector, at its token
    attn = t.h[0].attn                                  # c_attn: (d_model, 3 d_model) = q | k | v
    attn.c_attn.weight[ids("fish"), 2 * d_model + PROBE_DIM] = 1 / lnv
    attn.c_attn.weight[ids("cat"), 2 * d_model + PROBE_DIM] = -1 / lnv
    attn.c_proj.weight[PROBE_DIM, PROBE_DIM] = 1.0
    layer, index = (int(x) for x in CONCEPT_NEURON.split(":"))
    fc = t.h[layer].mlp.c_fc
    fc.weight[:, index] = 0.0
    fc.weight[ids("fish"), index] = 1.0
    fc.bias[index] = -3.0
    layer, index = (int(x) for x in LOOP_NEURON.split(":"))
    mlp = t.h[layer].mlp
    mlp.c_fc.weight[:, index] = 0.0
    mlp.c_fc.weight[[ids("moon"), ids("star")], index] = 1.0
    mlp.c_fc.bias[index] = -3.0
    mlp.c_proj.weight[index, ids("moon")] = 4.0
    uncertain = {ids(w) for w in UNCERTAIN}
    for u in range(vocab):
        model.lm_head.weight[successor(u, vocab), u] = UNCERTAIN_SCALE if u in uncertain else CONFIDENT_SCALE
    out = Path(out_dir)
    hf_logging.disable_progress_bar()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return Planted(out)
