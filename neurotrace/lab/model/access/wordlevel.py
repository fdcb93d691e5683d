"""The one word-level tokenizer builder: every word of a fixed vocabulary is exactly one token.

Used by the planted-circuit model, the tiny test models and the fact-world build tool, so that
"one word = one token" holds the same way everywhere. ``causal`` tokenizers are GPT-2 style
(``<|endoftext|>`` is BOS, EOS and padding); ``masked`` ones are BERT style (``[CLS] ... [SEP]``
around the text, ``[MASK]`` for the answer slot). Text is split into words (``\\w+``) and runs of
punctuation; spaces are dropped.

>>> tok = build_tokenizer(["the", "capital", "of", "france", "is", "paris"], "causal")
>>> tok("the capital of france is")["input_ids"]
[2, 3, 4, 5, 6]
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

TokenizerKind = Literal["causal", "masked"]
CAUSAL_SPECIALS = ("<|endoftext|>", "<unk>")
MASKED_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PRE_TOKENIZER = pre_tokenizers.Whitespace()  # words (\w+) and punctuation runs; spaces dropped


def split_words(text: str) -> list[str]:
    """The pieces :data:`PRE_TOKENIZER` cuts ``text`` into (each becomes one token if in the vocabulary)."""
    return [piece for piece, _ in PRE_TOKENIZER.pre_tokenize_str(text)]


def build_tokenizer(words: Sequence[str], kind: TokenizerKind, *,
                    max_length: int | None = None) -> PreTrainedTokenizerFast:
    """A word-level ``PreTrainedTokenizerFast`` over ``words`` (duplicates dropped, order kept)."""
    specials = CAUSAL_SPECIALS if kind == "causal" else MASKED_SPECIALS
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*specials, *words]))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials[1]))
    core.pre_tokenizer = PRE_TOKENIZER
    extra = {} if max_length is None else {"model_max_length": max_length}
    if kind == "causal":
        return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                       unk_token="<unk>", pad_token="<|endoftext|>", **extra)
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", **extra)


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: Path) -> None:
    """``save_pretrained`` plus a portable class name, so transformers 4.x and 5.x both load it."""
    tokenizer.save_pretrained(directory)
    path = Path(directory) / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
