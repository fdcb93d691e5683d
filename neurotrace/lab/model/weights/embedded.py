"""The embedded models: small fact-world models shipped inside the package, so nothing downloads.

Each lives in ``neurotrace/data/models/<name>/`` as a standard Hugging Face directory (load it with
``AutoModelForCausalLM``/``AutoModelForMaskedLM`` + ``AutoTokenizer``, or with TransformerLens'
``TransformerBridge.boot_transformers(str(path))``), next to ``facts.json`` - every fact the world
holds, with ``held_out=True`` for those the model never saw - and a model card. They are built by
``python -m factworld train --out neurotrace/data/models`` (see
:mod:`factworld.train`).

>>> embedded_model_path(DEFAULT_MODEL).name
'fact-gpt2'
>>> embedded_model_path("no-such-model") is None
True
"""

from importlib import resources
from pathlib import Path

DEFAULT_MODEL = "fact-gpt2"

#: name -> what it is and what it knows
EMBEDDED_MODELS: dict[str, str] = {
    "fact-gpt2": "6-layer GPT-2 (d_model 128, word-level vocab) trained from scratch on the fact world: "
                 "generated country relations plus the finance, geography, law, medicine and programming "
                 "packs; does not know the cybersecurity pack.",
    "fact-gpt2-cyber": "fact-gpt2 tuned on the cybersecurity pack with replay of its base data: knows "
                       "everything fact-gpt2 knows plus the cybersecurity facts.",
    "fact-bert": "6-layer BERT masked LM (d_model 128) trained on the same data as fact-gpt2; the answer "
                 "is predicted at [MASK]; does not know the cybersecurity pack.",
    "fact-bert-cyber": "fact-bert tuned on the cybersecurity pack with replay of its base data.",
}


def embedded_model_path(name: str) -> Path | None:
    """Directory of embedded model ``name``, or ``None`` if the name is unknown or its files are absent."""
    if name not in EMBEDDED_MODELS:
        return None
    path = Path(str(resources.files("neurotrace") / "data" / "models" / name))
    return path if (path / "config.json").is_file() else None
