"""Built-in fact packs: small, hand-checked fact sets, one per domain, shipped as package data.

A pack is a JSON file ``neurotrace/data/packs/<domain>.json`` of the form
``{"domain": ..., "description": ..., "facts": [Fact, ...]}`` where each fact follows
:class:`neurotrace.lab.facts.fact.Fact`. The packs are written for causal tracing:

* every ``target`` is one word, so a word-level tokenizer gives it exactly one token;
* every ``corrupt_subject`` is another subject of the same relation with a *different* answer and
  the same number of words, so a subject swap changes the prediction without shifting positions;
* ``context_from`` / ``context_to`` swap a key word of the template for context corruption.

The embedded fact-world models (:mod:`factworld.world`) are trained on these packs, so the
same facts can be traced end to end without downloading anything.

>>> list_packs()[:2]
['cybersecurity', 'finance']
>>> load_pack("geography").facts[0].prompt()
'The capital of France is'
"""

import json
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from neurotrace.lab.errors import InputError
from neurotrace.lab.facts.fact import Fact

PACKS_PACKAGE = "neurotrace"
PACKS_SUBDIR = ("data", "packs")
#: the domain packs the embedded fact-world models are trained on (single-word targets, word swaps);
#: the other packs (``known-facts``) are for real pretrained LMs
WORLD_PACKS = ("cybersecurity", "finance", "geography", "law", "medicine", "programming")
MODEL_FACTS_FILE = "facts.json"  # beside each embedded model: every fact, held_out where it never saw it
_FACT_LIST = TypeAdapter(list[Fact])


class FactPack(BaseModel):
    """One domain's facts, as stored in ``neurotrace/data/packs/<domain>.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    domain: str = Field(description="Pack name, e.g. 'cybersecurity'; equals the JSON file's stem.")
    description: str = Field(description="One sentence saying which relations the pack covers.")
    facts: list[Fact] = Field(description="The pack's facts; ids are '<domain>/<slug>' and unique.")


def _packs_dir() -> resources.abc.Traversable:
    root = resources.files(PACKS_PACKAGE)
    for part in PACKS_SUBDIR:
        root = root / part
    return root


def list_packs() -> list[str]:
    """Names of the built-in packs, sorted (the JSON file stems)."""
    return sorted(p.name.removesuffix(".json") for p in _packs_dir().iterdir() if p.name.endswith(".json"))


def pack_path(domain: str) -> Path:
    """The file of built-in pack ``domain`` (for re-measuring its flags in a source checkout)."""
    return Path(str(_packs_dir() / f"{domain}.json"))


def load_pack(domain: str) -> FactPack:
    """Load and validate one built-in pack; unknown names raise ``InputError('domain', ...)``."""
    names = list_packs()
    if domain not in names:
        raise InputError("domain", f"unknown fact pack {domain!r}", fix=f"use one of: {', '.join(names)}")
    text = (_packs_dir() / f"{domain}.json").read_text(encoding="utf-8")
    pack = FactPack.model_validate(json.loads(text))
    if pack.domain != domain:
        raise InputError("domain", f"pack file {domain}.json declares domain {pack.domain!r}",
                         fix="make the 'domain' field equal the file name")
    return pack


def load_all_packs() -> dict[str, FactPack]:
    """Every built-in pack, keyed by domain, in :func:`list_packs` order."""
    return {name: load_pack(name) for name in list_packs()}


def load_facts(directory: Path | str) -> list[Fact]:
    """A model directory's ``facts.json``: every fact, ``held_out`` set for those it never saw."""
    return _FACT_LIST.validate_json((Path(directory) / MODEL_FACTS_FILE).read_bytes())
