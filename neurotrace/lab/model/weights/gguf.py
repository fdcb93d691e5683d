"""GGUF files -> ordinary HuggingFace model directories, converted once and cached by content.

A GGUF file (llama.cpp's format) holds a model's weights, mostly quantised in blocks (``Q4_K``,
``Q8_0``, ...), plus its config and tokenizer as metadata. transformers can read one
(``from_pretrained(dir, gguf_file=name)``, needs the ``gguf`` package): it rebuilds the config, the
tokenizer (from the vocabulary and merges in the metadata) and dequantises every tensor to float32.
That costs tens of seconds a process (Gemma 3 270M: ~65 s, mostly parsing 262k vocabulary strings
twice), and the result refuses ``save_pretrained`` ("quantized with gguf and is not serializable").

So :func:`convert_gguf` does it once per file and keeps the result:

1. hash the file (:func:`file_sha256`); ``cache_dir/<sha256>/`` is the answer if it exists;
2. load model + tokenizer from the GGUF (dequantised float32 weights);
3. rebuild a plain model from the same config without the ``quantization_config`` entry
   (``AutoModelForCausalLM.from_config``), copy the state dict in with ``strict=True``, and save it
   with ``save_pretrained`` (safetensors) next to ``tokenizer.save_pretrained`` and a small
   ``gguf_source.json`` (file name, sha256, tensor types, quantisation summary);
4. everything is written into a temporary sibling directory which is renamed into place with one
   ``os.replace``: a directory under its hash exists only complete. Two processes converting the
   same file race harmlessly: the loser discards its copy and returns the winner's.

The saved weights are the dequantised values, so the cached directory computes exactly what the
GGUF-loaded model computes (the tests check logits). A later load is a plain
``from_pretrained(dir)`` of a safetensors checkpoint: a few seconds.

:func:`gguf_tensor_types` reads only the header (metadata keys and the tensor table), skipping the
vocabulary strings, so it is cheap even for a 262k-token vocabulary (``gguf.GGUFReader`` parses
every string and takes ~15 s on the Gemma file; the tests check both agree).
"""

import hashlib
import json
import mmap
import os
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neurotrace.lab.errors import InputError, NotFound

Progress = Callable[[str], None]   # called with "hashing", then "cache hit" or "dequantising", "saving", "done"
SOURCE_FILE = "gguf_source.json"
_CHUNK = 1 << 20

# GGUF metadata value types: fixed-size ones as struct formats; 8 = string, 9 = array.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def find_gguf(path: str | os.PathLike[str]) -> Path:
    """The ``.gguf`` file ``path`` names, or the one ``.gguf`` file in the directory ``path``."""
    text = os.fspath(path)
    if not text.strip() or "\x00" in text:
        raise InputError("model", f"{text!r} is not a usable path (empty or containing NUL)",
                         fix="give the path of a .gguf file or of a directory holding one")
    target = Path(text).expanduser()
    if target.is_file():
        if target.suffix.lower() != ".gguf":
            raise InputError("model", f"{target} is not a .gguf file", fix="give a file whose name ends in .gguf")
        return target.resolve()
    if not target.is_dir():
        raise NotFound("model", f"no file or directory at {target}", fix="check the path, or install the model")
    found = sorted(p for p in target.iterdir() if p.is_file() and p.suffix.lower() == ".gguf")
    if not found:
        raise NotFound("model", f"{target} holds no .gguf file",
                       fix="give the directory a model was installed into, or the .gguf file itself")
    if len(found) > 1:
        raise InputError("model", f"{target} holds {len(found)} .gguf files "
                         f"({', '.join(p.name for p in found)}), expected exactly one",
                         fix="name the .gguf file itself")
    return found[0].resolve()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


class _Header:
    """A cursor over a mapped GGUF header: reads values, skips what it is not asked to keep."""

    def __init__(self, blob: mmap.mmap) -> None:
        self.blob, self.pos = blob, 0

    def unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.blob, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        self.pos += length
        return self.blob[self.pos - length:self.pos].decode("utf-8")

    def value(self, kind: int) -> Any:
        """A scalar or string; an array is skipped and returned as its length."""
        if kind in _SCALAR:
            return self.unpack(_SCALAR[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise ValueError(f"unknown GGUF value type {kind}")
        item, count = self.unpack("<I"), self.unpack("<Q")
        if item in _SCALAR:
            self.pos += count * struct.calcsize(_SCALAR[item])
        elif item == _STRING:   # a vocabulary: 8-byte length + bytes each, jumped over without decoding
            for _ in range(count):
                self.pos += 8 + struct.unpack_from("<Q", self.blob, self.pos)[0]
        else:
            for _ in range(count):
                self.value(item)
        return count


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """``(metadata, [(tensor name, ggml type id), ...])`` from the header alone (arrays -> lengths)."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as blob:
        if blob[:4] != b"GGUF":
            raise InputError("model", f"{path} does not start with the GGUF magic bytes",
                             fix="give a file written by llama.cpp or the gguf package")
        cursor = _Header(blob)
        cursor.pos = 4
        version, n_tensors, n_keys = cursor.unpack("<I"), cursor.unpack("<Q"), cursor.unpack("<Q")
        if version not in (2, 3):
            raise InputError("model", f"{path} is GGUF v{version}; v2 and v3 are supported",
                             fix="re-export the model with a current llama.cpp")
        metadata = {cursor.string(): cursor.value(cursor.unpack("<I")) for _ in range(n_keys)}
        tensors = []
        for _ in range(n_tensors):
            name = cursor.string()
            n_dims = cursor.unpack("<I")
            cursor.pos += 8 * n_dims                    # the dimensions
            tensors.append((name, cursor.unpack("<I")))
            cursor.pos += 8                             # the data offset
    return metadata, tensors


def _type_counts(tensors: list[tuple[str, int]]) -> dict[str, int]:
    from gguf import GGMLQuantizationType  # optional dependency (the `gguf` package): only names types

    return dict(Counter(GGMLQuantizationType(kind).name for _, kind in tensors).most_common())


def gguf_tensor_types(path: str | os.PathLike[str]) -> dict[str, int]:
    """How many tensors the file stores in each ggml type, commonest first: ``{"F32": 109, "Q4_K": 27}``."""
    return _type_counts(read_header(path)[1])


def quantisation_summary(metadata: dict[str, Any], types: dict[str, int]) -> str:
    """llama.cpp's name for the file's quantisation ("Q4_K_M", "Q4_1", "F32"), else its commonest type."""
    from gguf import LlamaFileType  # optional dependency (the `gguf` package): the file_type names

    file_type = metadata.get("general.file_type")
    if isinstance(file_type, int) and file_type in LlamaFileType._value2member_map_:
        name = LlamaFileType(file_type).name
        return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    quantised = [name for name in types if name not in ("F32", "F16", "BF16")]
    return quantised[0] if quantised else next(iter(types), "unknown")


def _gguf_models(gguf: Path) -> tuple[Any, Any]:
    """``(model, tokenizer)`` as transformers builds them from the GGUF, weights in float32."""
    import torch  # heavy: only conversion needs torch and transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # Silences transformers' own bars; the legacy GGUF loader's "de-quantizing" bar is a bare tqdm and
    # still prints to stderr, once per conversion.
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model.eval(), tokenizer


def _plain_copy(model: Any) -> Any:
    """The same weights in a model built from the config alone, so it can be saved."""
    import torch  # heavy: only conversion needs torch and transformers
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True)
    return plain.eval()


def _write_conversion(gguf: Path, sha: str, out: Path, progress: Progress) -> None:
    """Write config, safetensors weights, tokenizer and gguf_source.json of ``gguf`` into ``out``."""
    metadata, tensors = read_header(gguf)
    types = _type_counts(tensors)
    progress("dequantising")
    model, tokenizer = _gguf_models(gguf)
    plain = _plain_copy(model)
    del model
    progress("saving")
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    source = {"file": gguf.name, "sha256": sha, "tensor_types": types,
              "quantisation": quantisation_summary(metadata, types),
              "architecture": metadata.get("general.architecture"), "name": metadata.get("general.name")}
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")


def convert_gguf(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str],
                 progress: Progress | None = None) -> Path:
    """``cache_dir/<sha256>/``: the GGUF at ``path`` as a plain HF directory (converted on first use)."""
    say = progress or (lambda stage: None)
    gguf = find_gguf(path)
    say("hashing")
    sha = file_sha256(gguf)
    final = Path(cache_dir).expanduser() / sha
    if (final / SOURCE_FILE).is_file():
        say("cache hit")
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=final.parent))
    try:
        _write_conversion(gguf, sha, work, say)
        work.chmod(0o755)                         # mkdtemp makes it owner-only
        os.replace(work, final)
    except OSError:
        if not (final / SOURCE_FILE).is_file():   # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say("done")
    return final


def read_source(converted: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``gguf_source.json`` record of a converted directory."""
    return json.loads((Path(converted) / SOURCE_FILE).read_text(encoding="utf-8"))
