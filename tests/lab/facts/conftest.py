"""Fixtures shared by the fact tests."""

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory, tiny_gpt2, gpt2_tokenizer_dir) -> Path:
    """A model directory with the real GPT-2 BPE tokenizer (only the tokenizer and config are read)."""
    out = tmp_path_factory.mktemp("bpe") / "gpt2-bpe"
    out.mkdir()
    shutil.copy(tiny_gpt2 / "config.json", out / "config.json")
    for f in gpt2_tokenizer_dir.iterdir():
        shutil.copy(f, out / f.name)
    return out
