"""A tiny GPT-2 with a planted "repetition neuron", set by hand: ground truth for clamp_sweep.

Construction (one-hot residual stream, ``d_model >= vocab``; attention and positions switched off):

* ``wte[t] = e_t``: the residual at a position is the one-hot vector of its token.
* The unembedding (untied) reads the successor map: ``W_U[v] = alpha * e_pred(v)``, so with a clean
  residual the model writes ``succ(t)``, i.e. it *counts* through the vocabulary (ordinary tokens only,
  never end-of-text): every output token differs from the last dozens, so the text is not collapsed.
* Neuron ``(layer, index)`` has bias ``drive`` and zero input weights, so it fires at about ``drive``
  at every position; its output row writes ``beta * e_R`` into the residual, which outweighs the token
  and makes the model emit ``succ(R)`` forever: "Z Z Z Z ...", a collapse.
* Clamping that neuron to 0 (or any value below ``1 / beta``) removes the push and the counting
  returns; clamping it high keeps the loop. Every other neuron is held off (bias -10).
"""

from pathlib import Path

import torch

from neurotrace.testing.tiny import tiny_tokenizer


def successor(token: int, vocab: int, first: int = 2) -> int:
    """The planted model's next token after ``token`` with a clean residual (specials are skipped)."""
    if token < first:
        return first
    return first + (token - first + 1) % (vocab - first)


@torch.no_grad()
def build_repetition_model(out_dir: Path | str, *, layer: int = 1, index: int = 3, n_layers: int = 2,
                           d_mlp: int = 16, drive: float = 5.0, beta: float = 2.0, alpha: float = 10.0,
                           repeat_token: str = "fish") -> Path:
    """Write the planted model + word-level tokenizer to ``out_dir``; returns the path."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_tokenizer("causal")
    vocab = len(tokenizer)
    d_model = 8 * ((vocab + 7) // 8)
    config = GPT2Config(vocab_size=vocab, n_positions=128, n_embd=d_model, n_layer=n_layers, n_head=4,
                        n_inner=d_mlp, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    model = GPT2LMHeadModel(config).eval()
    for p in model.parameters():
        p.zero_()
    t = model.transformer
    t.wte.weight[:, :vocab] = torch.eye(vocab)
    for block in t.h:
        for ln in (block.ln_1, block.ln_2):
            ln.weight.fill_(1.0)
        block.mlp.c_fc.bias.fill_(-10.0)            # every neuron off ...
    t.ln_f.weight.fill_(1.0)
    mlp = t.h[layer].mlp
    mlp.c_fc.bias[index] = drive                     # ... except the planted one, on everywhere
    rep = tokenizer.convert_tokens_to_ids(repeat_token)
    mlp.c_proj.weight[index, rep] = beta             # Conv1D weight is (d_mlp, d_model)
    for v in range(vocab):
        for u in range(vocab):
            if successor(u, vocab) == v:
                model.lm_head.weight[v, u] = alpha
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
