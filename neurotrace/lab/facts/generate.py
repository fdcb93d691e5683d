"""generate_facts: build a validated fact dataset that ``trace`` can read.

A causal trace is only as good as its facts. Each fact needs a prompt whose next token is the answer,
a subject span to corrupt, a plausible corrupt subject (same category, different answer) for subject
swaps, and - for every model that will be traced - an answer that is exactly one token where the model
is scored. This module gathers facts from one of four sources and checks all of that up front:

* ``pack``: built-in domain packs (``neurotrace://packs``), hand-checked, 8-12 facts each;
* ``spec``: a DatasetSpec JSON (masked-LM fact-study format), inline or a file path;
* ``rome``: ROME's known-facts JSON, inline or a file path (corrupt subjects are picked, seeded, from
  other subjects of the same relation);
* ``sampling``: the MCP client's own LLM drafts facts for a named domain.

Structural checks (exactly one ``{}`` in the template, ``context_from`` inside the template, clean and
corrupt subjects differ) come from :class:`~neurotrace.lab.facts.fact.Fact`; token checks from
:mod:`neurotrace.lab.facts.tokens`. A bad fact from a pack, spec or ROME file is an error naming
``facts[i].<field>``; a bad *drafted* fact is dropped and reported, because LLM drafts are expected to
be noisy. The run writes ``dataset.json`` (:class:`FactSet`) and ``run_config.json``
(:class:`GenerateFactsRunConfig`); ``trace`` reads the dataset back with :func:`load_dataset`.
"""

import json
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from neurotrace.lab.errors import InputError, NotFound, validation_message
from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.facts.packs import list_packs, load_pack
from neurotrace.lab.facts.sources import (
    DatasetSpec,
    Dropped,
    parse_drafted,
    parse_rome,
    read_json_source,
    rome_facts,
    spec_facts,
)
from neurotrace.lab.facts.swaps import SwapMismatch, swap_mismatches
from neurotrace.lab.facts.tokens import ModelReport, MultiTokenPolicy, check_model, load_vocab
from neurotrace.lab.inputs import InputPolicy
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.weights.embedded import embedded_model_path
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.results import RunResult

DEFAULT_VALIDATION_MODELS = ("fact-gpt2", "fact-bert")
DATASET_FILE, CONFIG_FILE = "dataset.json", "run_config.json"
MAX_LISTED_MISMATCHES = 5    # swap mismatches in the reply (all are in dataset.json): it stays agent-sized
DraftFn = Callable[[str, int], str]


class PackSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["pack"] = "pack"
    domains: list[str] = Field(min_length=1, description="Built-in pack names, e.g. ['cybersecurity']; list "
                               "them with the neurotrace://packs resource.")

    @field_validator("domains", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SpecSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["spec"] = "spec"
    spec: DatasetSpec | str = Field(description="A DatasetSpec object (domain, description, models, facts, "
                                    "variants, output_dir) (preferred) or the path of its JSON file under the "
                                    "server's input directories (default: runs dir, inputs/ beside it).")


class RomeSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["rome"] = "rome"
    records: list[Any] | str = Field(description="ROME known-facts records (known_id, subject, "
                                                "attribute, template, prediction, prompt, relation_id) or "
                                                "the path of known_1000.json under the server's "
                                                "input directories (default: runs dir, inputs/ beside it).")
    relations: list[str] | None = Field(None, description="Keep only these relation_ids, e.g. ['P36'].")
    limit: Annotated[int | None, Field(ge=1, description="Keep at most this many facts (after filtering).")] = None
    domain: str = Field("rome", description="Name recorded as the dataset's domain.")


class SamplingSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["sampling"] = "sampling"
    domain: Annotated[str, Field(min_length=1, description="Domain the client's LLM drafts facts about, e.g. "
                                 "'astronomy'.")]
    count: Annotated[int, Field(ge=1, le=50, description="How many facts to ask for.")] = 10


FactSource = Annotated[PackSource | SpecSource | RomeSource | SamplingSource, Field(discriminator="kind")]


class GenerateFactsRequest(BaseModel):
    """Which facts to gather and which models to validate them against."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "generate_facts"
    source: FactSource = Field(description="kind='pack' | 'spec' | 'rome' | 'sampling' (the client's LLM "
                               "drafts facts; needs MCP sampling).")
    models: list[str] | None = Field(None, description="Models whose tokenizers the facts must fit (embedded "
                                     "name, hub id or directory). Default: the embedded fact-gpt2 and "
                                     "fact-bert when present; [] checks structure only.")
    multi_token: MultiTokenPolicy = Field("error", description="Targets of several tokens: 'error' rejects "
                                          "them; 'first_token' keeps them and scores the first token.")
    seed: int = Field(0, description="Seed for choosing ROME corrupt subjects.")


class FactSet(BaseModel):
    """The content of a generate_facts run's ``dataset.json``."""

    model_config = ConfigDict(extra="forbid")
    domain: str
    description: str = ""
    source: str = Field(description="pack | spec | rome | sampling")
    multi_token_policy: MultiTokenPolicy = "error"
    facts: list[Fact]
    validation: list[ModelReport] = Field(default_factory=list, description="Per-model token checks.")
    dropped: list[Dropped] = Field(default_factory=list, description="Drafted facts that failed validation.")
    swap_mismatches: list[SwapMismatch] = Field(default_factory=list, description="Facts whose corrupt subject "
                                                "changes the prompt's token count in a model, with suggestions.")


class GenerateFactsRunConfig(BaseModel):
    """The content of a generate_facts run's ``run_config.json``: how the dataset was gathered."""

    model_config = ConfigDict(extra="forbid")
    source: FactSource = Field(description="The request's source, as given (pack, spec, rome or sampling).")
    domain: str = Field(description="The dataset's domain.")
    models: list[str] = Field(description="Models the facts were validated against, in order ([] = structure "
                              "only).")
    multi_token_policy: MultiTokenPolicy = Field(description="How targets of several tokens were treated.")
    seed: int = Field(description="Seed for choosing ROME corrupt subjects.")
    n_facts: int = Field(ge=0, description="Facts in dataset.json.")
    n_dropped: int = Field(ge=0, description="Drafted facts dropped by validation.")


class ModelSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    lm_kind: Literal["causal", "masked"]
    n_ok: int = Field(description="Facts usable for this model.")
    n_multi_token: int = Field(description="Facts whose target is several tokens (first token scored).")
    n_swap_mismatch: int = Field(0, description="Facts whose corrupt subject changes the prompt's token count "
                                 "here (no subject swap for them).")


class GenerateFactsResult(RunResult):
    domain: str
    source: str = Field(description="pack | spec | rome | sampling")
    n_facts: int = Field(description="Facts in the dataset.")
    n_dropped: int = Field(0, description="Drafted facts dropped by validation.")
    dropped: list[Dropped] = Field(default_factory=list)
    fact_ids: list[str] = Field(default_factory=list)
    multi_token_policy: MultiTokenPolicy = "error"
    validation: list[ModelSummary] = Field(default_factory=list, description="Per-model token checks.")
    swap_mismatches: list[SwapMismatch] = Field(default_factory=list, description="The first facts whose corrupt "
                                                "subject changes the prompt's token count in some model (subject "
                                                "swap needs equal counts), each with same-length suggestions; all "
                                                "of them are in dataset.json.")
    dataset_uri: str = Field(description="Resource URI of dataset.json.")


def default_models() -> list[str]:
    return [name for name in DEFAULT_VALIDATION_MODELS if embedded_model_path(name) is not None]


def _pack_facts(source: PackSource) -> tuple[str, str, list[Fact]]:
    packs = [load_pack(d) for d in dict.fromkeys(source.domains)]
    domain = "+".join(p.domain for p in packs)
    return domain, " ".join(p.description for p in packs), [f for p in packs for f in p.facts]


def _spec(source: SpecSource, inputs: InputPolicy | None = None) -> DatasetSpec:
    if isinstance(source.spec, DatasetSpec):
        return source.spec
    raw = read_json_source(source.spec, "source.spec", inputs)
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        raise InputError("source.spec", f"the file is not a DatasetSpec ({validation_message(exc)})",
                         fix="give domain, description, models, facts, variants, output_dir") from exc


def _rome_facts(source: RomeSource, seed: int, inputs: InputPolicy | None = None) -> tuple[str, str, list[Fact]]:
    raw = read_json_source(source.records, "source.records", inputs)
    if not isinstance(raw, list):
        raise InputError("source.records", "ROME known facts must be a JSON list of records",
                         fix="pass known_1000.json or a list of {known_id, subject, attribute, template, ...}")
    records = parse_rome(raw)
    facts = rome_facts(records, seed)
    if source.relations is not None:
        keep = set(source.relations)
        facts = [f for f in facts if f.relation in keep]
    facts = facts[: source.limit] if source.limit else facts
    if not facts:
        raise InputError("source.relations", "no ROME record matches the requested relations",
                         fix="omit relations or use relation_ids present in the file")
    return source.domain, f"ROME known facts ({len(facts)} records)", facts


def collect_facts(request: GenerateFactsRequest, draft_fn: DraftFn | None, inputs: InputPolicy | None = None
                  ) -> tuple[str, str, list[Fact], list[Dropped], list[int]]:
    """(domain, description, facts, dropped, each fact's index in the source) from the request's source,
    structurally validated."""
    src = request.source
    if isinstance(src, PackSource):
        domain, description, facts = _pack_facts(src)
    elif isinstance(src, SpecSource):
        spec = _spec(src, inputs)
        domain, description, facts = spec.domain, spec.description, spec_facts(spec)
    elif isinstance(src, RomeSource):
        domain, description, facts = _rome_facts(src, request.seed, inputs)
    else:
        return _drafted_facts(src, draft_fn)
    return domain, description, facts, [], list(range(len(facts)))


def _drafted_facts(src: SamplingSource, draft_fn: DraftFn | None
                   ) -> tuple[str, str, list[Fact], list[Dropped], list[int]]:
    if draft_fn is None:
        raise InputError("source", "source kind 'sampling' needs an MCP client that supports sampling (its LLM "
                         "drafts the facts); none is available here",
                         fix="use source {'kind': 'pack', 'domains': [...]} with one of: " + ", ".join(list_packs()))
    facts, dropped, origins = parse_drafted(draft_fn(src.domain, src.count), src.domain)
    return src.domain, f"Facts about {src.domain} drafted by the client's LLM", facts, dropped, origins


def _check_unique_ids(facts: list[Fact]) -> None:
    seen: dict[str, int] = {}
    for i, f in enumerate(facts):
        if f.id in seen:
            raise InputError(f"facts[{i}].id", f"fact {i} repeats the id {f.id!r} of fact {seen[f.id]}",
                             fix="give every fact a unique id")
        seen[f.id] = i


def _apply_token_checks(facts: list[Fact], origins: list[int], reports: list[ModelReport], drop: bool
                        ) -> tuple[list[Fact], list[Dropped]]:
    """Raise on (or, when ``drop``, remove) facts that fail a model's token check."""
    failures: list[tuple[int, str, str]] = []
    for i in range(len(facts)):
        bad = [r.checks[i] for r in reports if not r.checks[i].ok]   # checks are in fact order
        if bad:
            failures.append((i, bad[0].problem_field or "target", bad[0].problem or ""))
    if not failures:
        return facts, []
    if not drop:
        i, field, problem = failures[0]
        more = "" if len(failures) == 1 else (f"; {len(failures) - 1} more facts fail: "
                                              + ", ".join(f"facts[{j}].{f}" for j, f, _ in failures[1:6]))
        raise InputError(f"facts[{i}].{field}", f"fact {i} ({facts[i].id}): {problem}{more}",
                         fix="choose one-token answers in every model's vocabulary, set multi_token='first_token', "
                             "or validate against other models")
    bad_idx = {i for i, _, _ in failures}
    dropped = [Dropped(index=origins[i], field=f, reason=p, fact=facts[i].model_dump(mode="json"))
               for i, f, p in failures]
    return [f for i, f in enumerate(facts) if i not in bad_idx], dropped


def _restrict(report: ModelReport, keep_ids: set[str]) -> ModelReport:
    checks = [c for c in report.checks if c.fact_id in keep_ids]
    return report.model_copy(update={"checks": checks, "n_ok": sum(c.ok for c in checks),
                                     "n_multi_token": sum(len(c.target_tokens) > 1 for c in checks)})


def build_factset(request: GenerateFactsRequest, *, lab: Lab, reporter: Reporter,
                  draft_fn: DraftFn | None = None) -> FactSet:
    """Gather and validate the facts (no run is written)."""
    reporter.step(0, 3, "collecting facts")
    domain, description, facts, dropped, origins = collect_facts(request, draft_fn, lab.inputs)
    sampled = request.source.kind == "sampling"
    if not sampled:
        _check_unique_ids(facts)
    names = default_models() if request.models is None else list(dict.fromkeys(request.models))
    reports, vocabs = [], []
    for k, name in enumerate(names):
        reporter.step(1 + k / max(1, len(names)), 3, f"checking tokens for {name}")
        vocabs.append(load_vocab(name, trust_remote_code=lab.settings.trust_remote_code))
        reports.append(check_model(vocabs[-1], facts, request.multi_token))
    facts, token_dropped = _apply_token_checks(facts, origins, reports, drop=sampled)
    dropped = sorted(dropped + token_dropped, key=lambda d: d.index)
    if sampled:
        facts = facts[: request.source.count]
    if not facts:
        reasons = "; ".join(f"#{d.index} {d.field}: {d.reason}" for d in dropped[:5])
        raise InputError("source", f"none of the drafted facts passed validation ({reasons})",
                         fix="ask again with another domain or count, or use a built-in pack")
    keep = {f.id for f in facts}
    return FactSet(domain=domain, description=description, source=request.source.kind,
                   multi_token_policy=request.multi_token, facts=facts,
                   validation=[_restrict(r, keep) for r in reports], dropped=dropped,
                   swap_mismatches=swap_mismatches(facts, vocabs))


def _summary(fs: FactSet) -> str:
    text = f"{len(fs.facts)} facts for '{fs.domain}' (source: {fs.source})"
    if fs.validation:
        models = ", ".join(f"{r.model} ({r.lm_kind})" for r in fs.validation)
        multi = sum(r.n_multi_token for r in fs.validation)
        text += f", validated against {models}: every target is one token" if not multi else (
            f", validated against {models}: {multi} multi-token targets scored by their first token")
    else:
        text += "; checked for structure only (no models given)"
    if fs.swap_mismatches:
        per_model = {r.model: sum(r.model in m.tokens for m in fs.swap_mismatches) for r in fs.validation}
        text += (f". {len(fs.swap_mismatches)} corrupt subject(s) change the prompt's token count ("
                 + ", ".join(f"{n} in {model}" for model, n in per_model.items() if n)
                 + "), so subject swap skips them: " + ", ".join(m.fact_id for m in fs.swap_mismatches[:5])
                 + (" ..." if len(fs.swap_mismatches) > 5 else "")
                 + "; swap_mismatches suggests same-length corrupt subjects from the packs"
                 + (f" (the first {MAX_LISTED_MISMATCHES}; all in {DATASET_FILE})"
                    if len(fs.swap_mismatches) > MAX_LISTED_MISMATCHES else ""))
    elif fs.validation and any(f.corrupt_subject for f in fs.facts):
        text += ". Every corrupt subject keeps the prompt's token count in every model (subject swap works)"
    if fs.dropped:
        text += f". Dropped {len(fs.dropped)} drafted facts: " + "; ".join(
            f"#{d.index} {d.field}: {d.reason}" for d in fs.dropped[:4])
    return text + "."


def run_generate_facts(request: GenerateFactsRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER,
                       draft_fn: DraftFn | None = None) -> GenerateFactsResult:
    """Build a validated fact dataset (built-in pack, DatasetSpec, ROME known facts, or LLM drafts) for trace.

    Writes dataset.json + run_config.json. ``draft_fn(domain, count) -> text`` supplies the LLM reply for the
    'sampling' source (the MCP tool passes one that samples the client's LLM).
    """
    lab.check(request)  # bounds and the whole-job estimate, before any work
    fs = build_factset(request, lab=lab, reporter=reporter, draft_fn=draft_fn)
    reporter.step(2, 3, "writing dataset.json")
    with lab.store.open_run("generate_facts", request, seed=request.seed) as run:
        dataset_uri = run.write_json(DATASET_FILE, fs.model_dump(mode="json"))
        config = GenerateFactsRunConfig(source=request.source, domain=fs.domain,
                                        models=[r.model for r in fs.validation],
                                        multi_token_policy=request.multi_token, seed=request.seed,
                                        n_facts=len(fs.facts), n_dropped=len(fs.dropped))
        run.write_json(CONFIG_FILE, config.model_dump(mode="json"))
        summary = _summary(fs)
        run.set_summary(summary)
        artifacts = run.artifact_uris()
    models = [r.model for r in fs.validation] or ["fact-gpt2"]
    reporter.step(3, 3, "done")
    return GenerateFactsResult(
        run_id=run.run_id, summary=summary, artifacts=artifacts, domain=fs.domain, source=fs.source,
        n_facts=len(fs.facts), n_dropped=len(fs.dropped), dropped=fs.dropped, fact_ids=[f.id for f in fs.facts],
        multi_token_policy=fs.multi_token_policy, dataset_uri=dataset_uri,
        validation=[ModelSummary(model=r.model, lm_kind=r.lm_kind, n_ok=r.n_ok, n_multi_token=r.n_multi_token,
                                 n_swap_mismatch=sum(r.model in m.tokens for m in fs.swap_mismatches))
                    for r in fs.validation],
        swap_mismatches=fs.swap_mismatches[:MAX_LISTED_MISMATCHES],
        next=f"Call trace with {json.dumps({'request': {'models': models, 'dataset_run_id': run.run_id}})} to locate "
             "where these facts are stored.")


def load_factset(lab: Lab, run_id: str, field: str = "dataset_run_id") -> FactSet:
    """The :class:`FactSet` a generate_facts run wrote."""
    try:
        manifest = lab.store.manifest(run_id)
    except NotFound as exc:
        raise NotFound(field, exc.message, fix=exc.fix) from exc
    if manifest.tool != "generate_facts" or manifest.status != "complete":
        raise InputError(field, f"run {run_id} is a {manifest.status} {manifest.tool} run, not a complete "
                         "generate_facts run", fix="pass the run_id that generate_facts returned")
    return FactSet.model_validate(lab.store.read_json(run_id, DATASET_FILE))


def load_dataset(lab: Lab, run_id: str, field: str = "dataset_run_id") -> list[Fact]:
    """The facts of a generate_facts run, in order (for ``trace``); errors name ``field``."""
    return load_factset(lab, run_id, field).facts
