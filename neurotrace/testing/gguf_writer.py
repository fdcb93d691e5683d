"""Write tiny GGUF files from tiny random HF models, the way llama.cpp's converter would.

``write_tiny_gguf(family, out_dir)`` builds a seeded random ``llama`` or ``gpt2`` causal LM, writes it
as ``out_dir/tiny-<family>.gguf`` and returns the path with the source model, so a test can check
that a GGUF round trip (transformers' loader, :func:`neurotrace.lab.model.weights.gguf.convert_gguf`)
computes what the source computes.

What the inverse of transformers' GGUF loader needs (``modeling_gguf_pytorch_utils.py``):

* tensor names: llama.cpp's own map (``gguf.get_tensor_name_map``), HF name -> ``blk.N.attn_q`` etc.;
  a tied ``lm_head`` is left out (no ``output.weight`` means tied);
* llama: q and k rows permuted per head (llama.cpp interleaves the two rotary halves;
  transformers' ``LlamaTensorProcessor`` undoes it); gpt2: the four ``Conv1D`` weights transposed;
* config keys ``<arch>.block_count`` etc. (``GGUF_CONFIG_MAPPING``). For gpt2 ``context_length`` maps to
  ``n_ctx``, which ``GPT2Config`` ignores, so the source keeps the default ``n_positions=1024``;
  likewise ``n_inner`` must stay ``4 * n_embd``;
* tokenizer: ``tokenizer.ggml.model = "gpt2"`` (byte-level BPE) with tokens spelled in GPT-2's byte
  alphabet, merges ``"a b"``, token types (1 normal, 3 control) and the special ids.

All weights are F32 unless ``quantise`` names a block type for the 2-D weights (e.g. ``"Q8_0"``).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

Family = Literal["llama", "gpt2"]
WORDS = ("the city of paris is located in france capital country language spoken tower eiffel plays "
         "sport football music piano river mount london rome japan hello world").split()
EOS = "<|endoftext|>"
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def byte_alphabet() -> list[str]:
    """GPT-2's 256 printable stand-ins for bytes, in byte order (``bytes_to_unicode``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def byte_level_vocab(words: Sequence[str] = WORDS) -> tuple[list[str], list[str]]:
    """``(tokens, merges)``: the byte alphabet, left-to-right merges spelling each word (with a leading
    space ``Ġ`` and bare), then the end-of-text control token."""
    tokens, merges, seen = byte_alphabet(), [], set(byte_alphabet())
    for word in words:
        for piece in ("Ġ" + word, word):  # spaced first, so " city" merges to one token before "city"
            current = piece[0]
            for char in piece[1:]:
                if current + char not in seen:
                    merges.append(f"{current} {char}")
                    tokens.append(current + char)
                    seen.add(current + char)
                current += char
    return [*tokens, EOS], merges


def source_model(family: Family, vocab_size: int, seed: int = 0) -> Any:
    """A tiny random causal LM whose every parameter (norms and biases too) is non-trivial."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)  # model init draws from the global RNG; this is test-fixture code
    eos = vocab_size - 1
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
            rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=eos, eos_token_id=eos, tie_word_embeddings=False))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4,
                                           layer_norm_epsilon=1e-5, bos_token_id=eos, eos_token_id=eos))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model.eval()


def _permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: per head, the two rotary halves interleaved."""
    return (weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def gguf_tensors(model: Any, family: Family) -> dict[str, np.ndarray]:
    """``{gguf name: float32 array}`` in the layout llama.cpp writes."""
    import gguf  # optional dependency: the `gguf` package is only needed to write test files

    config = model.config
    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[family]
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = config.tie_word_embeddings
    out: dict[str, np.ndarray] = {}
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        base, suffix = hf_name.rsplit(".", 1)
        name = names.get_name(base)
        if name is None:
            raise ValueError(f"no GGUF name for {hf_name}")
        array = tensor.detach().float().numpy().copy()
        if family == "gpt2" and hf_name.endswith(_CONV1D):
            array = array.T.copy()
        elif family == "llama" and name.endswith(".attn_q"):
            array = _permute(array, config.num_attention_heads)
        elif family == "llama" and name.endswith(".attn_k"):
            array = _permute(array, config.num_key_value_heads)
        out[f"{name}.{suffix}"] = array
    return out


def _add_config(writer: Any, model: Any, family: Family) -> None:
    config = model.config
    writer.add_block_count(config.num_hidden_layers)
    writer.add_embedding_length(config.hidden_size)
    writer.add_head_count(config.num_attention_heads)
    if family == "llama":
        writer.add_context_length(config.max_position_embeddings)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count_kv(config.num_key_value_heads)
        writer.add_rope_dimension_count(config.head_dim)
        writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_vocab_size(config.vocab_size)
    else:
        writer.add_context_length(config.n_positions)
        writer.add_feed_forward_length(4 * config.n_embd)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)


def _add_tokenizer(writer: Any, tokens: list[str], merges: list[str]) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token == EOS else 1 for token in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index(EOS))
    writer.add_eos_token_id(tokens.index(EOS))
    writer.add_add_bos_token(False)


def _add_tensors(writer: Any, tensors: dict[str, np.ndarray], quantise: str | None) -> None:
    import gguf  # optional dependency: the `gguf` package is only needed to write test files

    kind = gguf.GGMLQuantizationType[quantise] if quantise else None
    for name, array in tensors.items():
        if kind is not None and array.ndim == 2:
            writer.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
        else:
            writer.add_tensor(name, array)


def write_tiny_gguf(family: Family, out_dir: Path | str, *, seed: int = 0,
                    quantise: str | None = None) -> tuple[Path, Any]:
    """Write ``out_dir/tiny-<family>.gguf``; return ``(path, source model)``."""
    import gguf  # optional dependency: the `gguf` package is only needed to write test files

    tokens, merges = byte_level_vocab()
    model = source_model(family, len(tokens), seed)
    path = Path(out_dir) / f"tiny-{family}.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, family)
    writer.add_name(f"tiny {family}")
    file_type = gguf.LlamaFileType[f"MOSTLY_{quantise}"] if quantise else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(file_type)
    _add_config(writer, model, family)
    _add_tokenizer(writer, tokens, merges)
    _add_tensors(writer, gguf_tensors(model, family), quantise)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, model
