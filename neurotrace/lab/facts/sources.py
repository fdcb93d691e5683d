"""Where facts come from, turned into :class:`~neurotrace.lab.facts.fact.Fact` records.

Three importers plus a parser for LLM-drafted facts:

* **DatasetSpec** - the JSON people already write for masked-LM fact studies: ``domain``,
  ``description``, ``models`` (``[{name, huggingface_id}]``), ``facts`` (each in the Fact fields:
  ``template`` with one ``{}``, ``clean_subject``, ``corrupt_subject``, ``target``, ``context_from``,
  ``context_to``), spec-wide prompt ``variants`` (prefix/suffix pairs, given to every fact that has
  none of its own) and ``output_dir`` (kept for the record; datasets always live in run directories).
* **ROME known facts** (``known_1000.json``): ``{known_id, subject, attribute, template, prediction,
  prompt, relation_id}``. The template already has ``{}`` for the subject and the attribute is the
  target. ROME traces with noise only, so there is no corrupt subject; we pick one for subject-swap
  corruption from the *other subjects of the same relation* whose attribute differs, with a seeded
  generator, so the same file and seed always give the same pairs.
* **Drafted facts** - free text from an LLM. :func:`parse_drafted` pulls the first JSON list of fact
  objects out of the reply (code fences and prose around it are fine), accepts a few obvious key
  aliases (``subject``, ``answer``...) and returns per-item problems instead of raising, because a
  drafted fact that fails validation is dropped and reported, never fatal.
"""

import json
import re
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neurotrace.lab.errors import InputError, LabError, NotFound, lab_error_in
from neurotrace.lab.facts.fact import Fact, PromptVariant
from neurotrace.lab.inputs import InputPolicy
from neurotrace.lab.seeding import make_generator


class SpecModel(BaseModel):
    """A model a DatasetSpec was written for."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Short display name, e.g. 'bert-base'.")
    huggingface_id: str = Field(description="HuggingFace id or local path, e.g. 'bert-base-uncased'.")


class DatasetSpec(BaseModel):
    """A fact dataset spec (the masked-LM fact-study format), imported as-is."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    domain: Annotated[str, Field(min_length=1, description="Domain name, e.g. 'cybersecurity'.")]
    description: str = Field("", description="What the facts cover.")
    models: list[SpecModel] = Field(default_factory=list, description="Models the spec was written for "
                                    "(recorded; validation uses the request's `models`).")
    facts: list[Any] = Field(min_length=1, description="Facts in the Fact fields (template with "
                                        "one '{}', clean_subject, corrupt_subject, target, ...).")
    variants: list[PromptVariant] = Field(default_factory=list, description="Prompt variants given to "
                                          "every fact without its own.")
    output_dir: str | None = Field(None, description="Recorded only: datasets are written to the run "
                                   "directory.")


class RomeRecord(BaseModel):
    """One entry of ROME's known-facts JSON (``known_1000.json``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    known_id: int | str = Field(description="ROME's id of the fact.")
    subject: str = Field(description="The subject, e.g. 'Vinson Massif'.")
    attribute: str = Field(description="The true object, e.g. 'Antarctica' (becomes the target).")
    template: str = Field(description="Prompt with '{}' for the subject.")
    prediction: str = Field("", description="GPT-2 XL's greedy continuation (recorded, not used).")
    prompt: str = Field("", description="template.format(subject); checked when given.")
    relation_id: str = Field(description="Wikidata relation, e.g. 'P30'.")


def read_json_source(value: Any, field: str, policy: InputPolicy | None = None) -> Any:
    """An inline JSON value, or the parsed content of the file a string names.

    With a ``policy`` (always, from a server or CLI request) only the files it allows are read; errors
    never quote the file's content."""
    if not isinstance(value, str):
        return value
    if policy is not None:
        text, name = policy.read_text(value, field)
    else:
        path = Path(value).expanduser()
        if not path.is_file():
            raise NotFound(field, f"no file named {path.name!r}", fix="pass the JSON inline or an existing file path")
        text, name = path.read_text(encoding="utf-8"), path.name
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(field, f"{name} is not valid JSON ({exc.msg} at line {exc.lineno})",
                         fix="fix the file") from exc


def fact_error(index: int, exc: Exception, fact_id: str = "") -> InputError:
    """Re-raise a Fact validation failure as an InputError naming ``facts[i].field``."""
    label = f" ({fact_id})" if fact_id else ""
    if isinstance(exc, ValidationError):
        exc = lab_error_in(exc) or exc
    if isinstance(exc, LabError):
        return InputError(f"facts[{index}].{exc.field}", f"fact {index}{label}: {exc.message}", fix=exc.fix)
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "fact"
        return InputError(f"facts[{index}].{loc}", f"fact {index}{label}: {err['msg']}",
                          fix="see the Fact fields: template, clean_subject, corrupt_subject, target, ...")
    raise exc


def to_fact(index: int, data: dict[str, Any], default_id: str, variants: list[PromptVariant] = ()) -> Fact:
    """Validate one fact dict; failures become ``InputError('facts[i].<field>', ...)``."""
    if not isinstance(data, dict):
        raise InputError(f"facts[{index}]", f"fact {index} is a {type(data).__name__}, not an object",
                         fix="write each fact as a JSON object with the Fact fields")
    data = dict(data)
    data.setdefault("id", default_id)
    if not data["id"]:
        data["id"] = default_id
    if variants and not data.get("variants"):
        data["variants"] = [v.model_dump() for v in variants]
    try:
        return Fact.model_validate(data)
    except (LabError, ValidationError) as exc:
        raise fact_error(index, exc, str(data.get("id", ""))) from exc


def spec_facts(spec: DatasetSpec) -> list[Fact]:
    """The spec's facts, each validated (ids default to ``<domain>/<index>``)."""
    return [to_fact(i, f, f"{spec.domain}/{i}", spec.variants) for i, f in enumerate(spec.facts)]


def parse_rome(records: list[Any]) -> list[RomeRecord]:
    out = []
    for i, raw in enumerate(records):
        try:
            out.append(RomeRecord.model_validate(raw))
        except ValidationError as exc:
            raise fact_error(i, exc) from exc
    return out


def rome_facts(records: list[RomeRecord], seed: int) -> list[Fact]:
    """ROME records -> Facts, with a seeded corrupt subject from the same relation (None if there is none)."""
    by_relation: dict[str, list[RomeRecord]] = {}
    for r in records:
        by_relation.setdefault(r.relation_id, []).append(r)
    gen = make_generator(seed)
    facts = []
    for i, r in enumerate(records):
        if r.prompt and r.template.count("{}") == 1 and r.template.format(r.subject) != r.prompt:
            raise InputError(f"facts[{i}].prompt", f"fact {i} (rome/{r.known_id}): prompt {r.prompt!r} is not "
                             f"template.format(subject) = {r.template.format(r.subject)!r}",
                             fix="fix the record's template, subject or prompt")
        pool = sorted({o.subject for o in by_relation[r.relation_id]
                       if o.subject.strip() != r.subject.strip() and o.attribute.strip() != r.attribute.strip()})
        corrupt = pool[int(torch.randint(len(pool), (1,), generator=gen))] if pool else None
        facts.append(to_fact(i, {"id": f"rome/{r.known_id}", "relation": r.relation_id, "template": r.template,
                                 "clean_subject": r.subject, "corrupt_subject": corrupt,
                                 "target": r.attribute.strip()}, f"rome/{r.known_id}"))
    return facts


# -- drafted facts ------------------------------------------------------------------------------

ALIASES = {"subject": "clean_subject", "answer": "target", "object": "target", "attribute": "target",
           "corruption": "corrupt_subject", "corrupted_subject": "corrupt_subject", "prompt_template": "template"}
FENCE_RE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


class Dropped(BaseModel):
    """A drafted fact that failed validation, with the reason."""

    model_config = ConfigDict(extra="forbid")
    index: int = Field(description="Position in the drafted list (0-based).")
    field: str = Field(description="The field at fault, e.g. 'template' or 'target'.")
    reason: str = Field(description="What was wrong.")
    fact: dict[str, Any] = Field(default_factory=dict, description="The drafted fact as received.")


def extract_json_list(text: str) -> list[Any] | None:
    """The first JSON list of objects in ``text`` (or a ``{"facts": [...]}`` object); None if there is none."""
    candidates = [m.group(1) for m in FENCE_RE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in candidates:
        for start, ch in enumerate(chunk):
            if ch not in "[{":
                continue
            try:
                value, _ = decoder.raw_decode(chunk, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and isinstance(value.get("facts"), list):
                value = value["facts"]
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                return value
    return None


def normalise_drafted(item: dict[str, Any]) -> dict[str, Any]:
    """Map key aliases, drop unknown keys, strip the target's leading space."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        key = ALIASES.get(key, key)
        if key in Fact.model_fields and key not in out:
            out[key] = value
    if isinstance(out.get("target"), str):
        out["target"] = out["target"].strip()
    out.pop("held_out", None)
    return out


def parse_drafted(text: str, domain: str) -> tuple[list[Fact], list[Dropped], list[int]]:
    """Facts drafted by an LLM: the valid ones, the dropped ones with reasons, and each valid one's index in
    the drafted list."""
    items = extract_json_list(text)
    if items is None:
        raise InputError("source", "the client's LLM reply holds no JSON list of facts",
                         fix="try again, or use a built-in pack (source kind 'pack')")
    slug = re.sub(r"[^a-z0-9]+", "_", domain.lower()).strip("_") or "drafted"
    facts: list[Fact] = []
    dropped: list[Dropped] = []
    origins: list[int] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        try:
            fact = to_fact(i, normalise_drafted(item), f"{slug}/drafted_{i}")
        except InputError as exc:
            dropped.append(Dropped(index=i, field=exc.field.split(".", 1)[-1], reason=exc.message, fact=item))
            continue
        prompt = fact.prompt()
        if prompt in seen:
            dropped.append(Dropped(index=i, field="clean_subject", reason=f"repeats the prompt of #{seen[prompt]}",
                                   fact=item))
            continue
        seen[prompt] = i
        facts.append(fact)
        origins.append(i)
    return facts, dropped, origins


def drafting_prompt(domain: str, count: int) -> str:
    """The instruction sent to the client's LLM (identical for the same domain and count)."""
    return (
        f"Write {count} factual statements about the domain '{domain}' for a causal-tracing experiment on "
        "small language models. Reply with only a JSON list; each item is an object with the keys:\n"
        '  "template": a sentence start containing exactly one "{}" where the subject goes; the answer '
        "must be the very next word after the template (do not include the answer in the template),\n"
        '  "clean_subject": the subject the fact is about,\n'
        '  "corrupt_subject": another subject of the same kind whose answer is different,\n'
        '  "target": the answer, a single common word without a leading space,\n'
        '  "relation": a short snake_case relation name,\n'
        '  "context_from": one word of the template that sets up the relation (optional),\n'
        '  "context_to": a word to put in its place that changes the relation (optional).\n'
        "Every answer must be unambiguous and well known. Example item:\n"
        '{"template": "The capital of {} is", "clean_subject": "France", "corrupt_subject": "Japan", '
        '"target": "Paris", "relation": "capital_of", "context_from": "capital", "context_to": "currency"}'
    )
