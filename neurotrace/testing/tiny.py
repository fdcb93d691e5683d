"""Tiny randomly initialised models built from configs, for tests and benchmarks (no hub access).

``build_tiny(family, out_dir)`` writes a standard HuggingFace directory (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json) that loads through exactly the same code
as a hub model. The tokenizer is word-level over a small fixed vocabulary, so every word is one token.
"""

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from neurotrace.lab.model.access.wordlevel import build_tokenizer

Family = Literal["gpt2", "bert", "llama", "gpt_neox", "qwen3", "gemma3_text", "phi3", "mistral"]
# Every causal decoder family above (each exercises something: GQA + q/k norms (qwen3), sliding and full
# layers with local/global RoPE and scaled embeddings (gemma3_text), parallel attention and partial
# rotary (gpt_neox), fused qkv and partial rotary (phi3), a sliding window on every layer (mistral)).
DECODER_FAMILIES: tuple[Family, ...] = ("gpt2", "llama", "gpt_neox", "qwen3", "gemma3_text", "phi3", "mistral")

WORDS = ("the a of in is was to and city country capital language river king queen paris france "
         "london england rome italy berlin germany madrid spain tokyo japan french english italian "
         "german spanish japanese speaks lives born located famous known for its people eat play "
         "music red blue green big small old new one two three four five six seven eight nine ten "
         "cat dog bird fish tree house car road water fire earth air sun moon star day night").split()


def word_prompts(n: int, length: int, seed: int) -> list[str]:
    """``n`` seeded prompts of ``length`` words drawn from :data:`WORDS` (in the tiny models' vocabulary)."""
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(WORDS) for _ in range(length)) for _ in range(n)]


def tiny_tokenizer(kind: Literal["causal", "masked"], words: Sequence[str] = WORDS):
    """The word-level tokenizer of the tiny models: ``words`` plus ``.``, ``,`` and ``?``."""
    return build_tokenizer([*words, ".", ",", "?"], kind)


def build_tiny(family: Family, out_dir: Path | str, *, seed: int = 0, n_layers: int = 2, d_model: int = 32,
               n_heads: int = 4, d_mlp: int | None = None) -> Path:
    """Write a tiny random ``family`` model + tokenizer to ``out_dir`` and return the path."""
    out = Path(out_dir)
    kind = "masked" if family == "bert" else "causal"
    tokenizer = tiny_tokenizer(kind)
    torch.manual_seed(seed)  # model init uses the global RNG; this is a build script, not library code
    model = _model(family, len(tokenizer), n_layers, d_model, n_heads, d_mlp or 4 * d_model)
    model.eval()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar on stderr
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _model(family: Family, vocab: int, n_layers: int, d_model: int, n_heads: int, d_mlp: int):
    """A randomly initialised ``family`` model of the given shape."""
    import transformers as tf  # heavy; only build scripts and tests make tiny models

    ids = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    dec = {"vocab_size": vocab, "hidden_size": d_model, "intermediate_size": d_mlp, "num_hidden_layers": n_layers,
           "num_attention_heads": n_heads, "max_position_embeddings": 64, **ids}
    gqa = max(1, n_heads // 2)
    if family == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=d_model, n_layer=n_layers,
                                                n_head=n_heads, n_inner=d_mlp, bos_token_id=0, eos_token_id=0))
    if family == "bert":
        return tf.BertForMaskedLM(tf.BertConfig(vocab_size=vocab, hidden_size=d_model, num_hidden_layers=n_layers,
                                                num_attention_heads=n_heads, intermediate_size=d_mlp,
                                                max_position_embeddings=64, pad_token_id=0))
    if family == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**dec, num_key_value_heads=n_heads))
    if family == "gpt_neox":
        dec.pop("pad_token_id")
        return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**dec))  # partial rotary (0.25), parallel attention
    if family == "qwen3":
        return tf.Qwen3ForCausalLM(tf.Qwen3Config(**dec, num_key_value_heads=gqa, head_dim=d_model // n_heads))
    if family == "mistral":
        return tf.MistralForCausalLM(tf.MistralConfig(**dec, num_key_value_heads=gqa, sliding_window=3))
    if family == "phi3":
        return tf.Phi3ForCausalLM(tf.Phi3Config(**dec, num_key_value_heads=gqa, partial_rotary_factor=0.5))
    types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    return tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**dec, num_key_value_heads=gqa, head_dim=d_model // n_heads,
                                                    sliding_window=3, layer_types=types,
                                                    query_pre_attn_scalar=d_model // n_heads))


def build_gpt2_small(out_dir: Path, tokenizer_dir: Path) -> Path:
    """A randomly initialised GPT-2-small-shaped model (124M; seed 0) with the real GPT-2 tokenizer files
    found in ``tokenizer_dir`` (for the benchmarks; the global RNG is restored afterwards)."""
    import shutil

    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.random.fork_rng():
        torch.manual_seed(0)  # transformers' init draws from the global RNG
        GPT2LMHeadModel(GPT2Config()).eval().save_pretrained(out_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, out_dir / name)
    return out_dir
