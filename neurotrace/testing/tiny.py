"""Tiny randomly initialised models built from configs, for tests and benchmarks (no hub access).

``build_tiny(family, out_dir)`` writes a standard HuggingFace directory (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json) that loads through exactly the same code
as a hub model. The tokenizer is word-level over a small fixed vocabulary, so every word is one token.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from neurotrace.lab.model.wordlevel import build_tokenizer

Family = Literal["gpt2", "bert", "llama", "gpt_neox"]

WORDS = ("the a of in is was to and city country capital language river king queen paris france "
         "london england rome italy berlin germany madrid spain tokyo japan french english italian "
         "german spanish japanese speaks lives born located famous known for its people eat play "
         "music red blue green big small old new one two three four five six seven eight nine ten "
         "cat dog bird fish tree house car road water fire earth air sun moon star day night").split()


def tiny_tokenizer(kind: Literal["causal", "masked"], words: Sequence[str] = WORDS):
    """The word-level tokenizer of the tiny models: ``words`` plus ``.``, ``,`` and ``?``."""
    return build_tokenizer([*words, ".", ",", "?"], kind)


def build_tiny(family: Family, out_dir: Path | str, *, seed: int = 0, n_layers: int = 2, d_model: int = 32,
               n_heads: int = 4, d_mlp: int | None = None) -> Path:
    """Write a tiny random ``family`` model + tokenizer to ``out_dir`` and return the path."""
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    out = Path(out_dir)
    kind = "masked" if family == "bert" else "causal"
    tokenizer = tiny_tokenizer(kind)
    vocab = len(tokenizer)
    d_mlp = d_mlp or 4 * d_model
    torch.manual_seed(seed)  # model init uses the global RNG; this is a build script, not library code
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=64, n_embd=d_model, n_layer=n_layers,
                                           n_head=n_heads, n_inner=d_mlp, bos_token_id=0, eos_token_id=0))
    elif family == "bert":
        model = BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=d_model, num_hidden_layers=n_layers,
                                           num_attention_heads=n_heads, intermediate_size=d_mlp,
                                           max_position_embeddings=64, pad_token_id=0))
    elif family == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=d_mlp,
                                             num_hidden_layers=n_layers, num_attention_heads=n_heads,
                                             num_key_value_heads=n_heads, max_position_embeddings=64,
                                             bos_token_id=0, eos_token_id=0, pad_token_id=0))
    else:
        model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=d_mlp,
                                                 num_hidden_layers=n_layers, num_attention_heads=n_heads,
                                                 max_position_embeddings=64, bos_token_id=0, eos_token_id=0))
    model.eval()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar on stderr
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
