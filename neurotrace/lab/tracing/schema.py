"""trace: where does a model store a fact? Causal tracing (ROME) and context patching.

Causal tracing (Meng et al., 2022) runs a prompt three ways: **clean**; **corrupted** (Gaussian
noise added to the subject's token embeddings - ``scale`` times a per-model noise unit, ``samples``
seeded draws - or the subject swapped for a same-category one); and **restored**: corrupted, but with
the clean state of one site put back at one (layer, position). p(target) of the restored run minus
that of the corrupted run is the *indirect effect* of the site. Sites are the residual stream after
each layer (``resid``), or the MLP / attention outputs (``mlp`` / ``attn``) over a window of layers
centred on the layer (ROME used 10). A peak at the MLPs of the last subject token in middle layers is
the classic signature of stored factual associations.

The scored position is the last token (causal LMs) or the mask (masked LMs; a masked LM whose
tokenizer has no mask token is refused). ``context_patch`` corrupts a context word (``context_from``
-> ``context_to``) and restores it per layer (how long the context word matters).

Every fact is checked on every model before any compute (tokenisation, swap length, context length,
known or not); facts that cannot be traced are skipped and listed. Facts the model gets wrong on the
clean prompt (unknown) are skipped and listed before any grid runs; ``trace_unknown`` traces them as a
control, flagged and left out of averages. Each fact's
noise is seeded from (seed, fact id), and the noise unit is a per-model reference, so a fact's numbers
never depend on the other facts of the request. ``mode='approx'`` estimates the grid from one forward
and backward (attribution patching) and checks itself against exact patching on a sample of cells.

The records of ``trace_results.json`` (:class:`TraceResults`) are defined here too, so ``plot`` and
``compare`` read back exactly what ``trace`` wrote.
"""

from enum import IntEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neurotrace.lab.errors import InputError
from neurotrace.lab.facts import Fact
from neurotrace.lab.jobs import (
    PACK_FACTS_GUESS,
    ROWS_PER_BATCH,
    Estimate,
    dims_of,
    forward_bytes,
    positions,
    weight_bytes,
)
from neurotrace.lab.model.access.chat import CHAT_FIELD_HELP
from neurotrace.lab.model.runtime.execution import Backend, Remote
from neurotrace.lab.model.runtime.precision import Agreement, InsistPrecision, Precision, bytes_per_value
from neurotrace.lab.results import RunResult

Component = Literal["resid", "mlp", "attn"]
ROME_WINDOW = 10
RECOMPUTED_CELLS = 4   # per component, the float32 cells a bfloat16 run recomputes (peaks + random), for cost()


class NoiseCorruption(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["noise"] = "noise"
    scale: Annotated[float, Field(gt=0, description="Noise std as a multiple of the noise unit "
                                                    "(noise_std_from; ROME used 3).")] = 3.0
    samples: Annotated[int, Field(ge=1, le=100, description="Seeded noise draws averaged per cell.")] = 10


class SwapCorruption(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["swap"] = "swap"


Corruption = Annotated[NoiseCorruption | SwapCorruption, Field(discriminator="kind")]


class TraceRequest(BaseModel):
    """What to trace, on which models, how."""

    model_config = ConfigDict(extra="forbid")
    tool: ClassVar[str] = "trace"
    on_ndif: ClassVar[bool] = True  # every forward is a trace of saved values, so it can run on NDIF
    models: list[str] = Field(min_length=1, description="Models to trace on the same facts. Embedded "
                                                          "names (fact-gpt2, fact-bert ...), HuggingFace ids or local dirs.")
    facts: list[Fact] = Field(default_factory=list, description="Facts inline (template with '{}', "
                                                                  "clean_subject, corrupt_subject, target ...).")
    dataset_run_id: str | None = Field(None, description="A generate_facts run whose dataset.json to trace.")
    pack: str | None = Field(None, description="A built-in fact pack: cybersecurity, medicine, law, finance, "
                                               "programming, geography.")
    max_facts: Annotated[int | None, Field(ge=1, description="Trace at most this many facts.")] = None
    components: list[Component] = Field(default_factory=lambda: ["resid", "mlp", "attn"], min_length=1,
                              description="Sites restored. resid (layer output), mlp, attn (windows).")
    window: Annotated[int | None, Field(ge=1, description="Layers restored together for mlp/attn. Centred "
                                                          "on the layer; default scales ROME's 10 of 48 layers "
                                                          "to the model (1 for 6 layers, 2 for 12).")] = None
    corruption: Corruption = Field(default_factory=NoiseCorruption, description="{'kind':'noise', 'scale':3, "
                                   "'samples':10} or {'kind':'swap'} (uses each fact's corrupt_subject).")
    noise_std_from: Literal["embeddings", "dataset"] | Annotated[float, Field(gt=0)] = Field(
        "embeddings", description="Noise unit. 'embeddings' (std of the embedding output over the vocabulary), "
        "'dataset' (ROME: noise_dataset's subjects tokenized alone) or a number.")
    noise_dataset: str | None = Field(None, description="For 'dataset': a pack or generate_facts run id "
                                      "(default: this request's facts, before max_facts).")
    rome_compat: bool = Field(False, description="ROME's conventions. Window 10, subjects-alone std, one "
                              "RandomState(1) draw for all facts, ROME's buckets, unknown facts skipped.")
    mode: Literal["exact", "approx"] = Field("exact", description="Exact or approx. 'exact' restores every cell; 'approx' = "
                                             "attribution patching (one forward + backward per fact), "
                                             "checked against exact patching on a sample of cells.")
    check_agreement: bool = Field(False, description="Approx vs the exact grid. With mode='approx', also "
                                                     "run the full exact grid and report agreement cell by cell.")
    heads: bool = Field(False, description="Also patch each head. Each attention head's output at the scored position.")
    chat: bool = Field(False, description=CHAT_FIELD_HELP)
    trace_unknown: bool = Field(False, description="Also trace facts the model does not know (a control).")
    seed: int = Field(0, description="Seed of the noise generator (each fact's noise: seed + fact id).")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    backend: Backend = "hf"
    remote: Remote = False
    precision: Precision = "float32"
    insist_precision: InsistPrecision = False

    @model_validator(mode="after")
    def _one_source(self) -> "TraceRequest":
        given = [n for n, v in (("facts", self.facts), ("dataset_run_id", self.dataset_run_id),
                                ("pack", self.pack)) if v]
        if len(given) != 1:
            raise InputError("facts", f"give exactly one of facts, dataset_run_id or pack (got {given or 'none'})",
                             fix="e.g. pack='geography', or dataset_run_id from generate_facts")
        if len(set(self.components)) != len(self.components):
            raise InputError("components", "components repeat", fix="list each of resid, mlp, attn at most once")
        if self.rome_compat and self.window not in (None, ROME_WINDOW):
            raise InputError("window", f"rome_compat fixes the window at {ROME_WINDOW}",
                             fix="omit window, or drop rome_compat")
        if self.rome_compat and self.trace_unknown:
            raise InputError("trace_unknown", "rome_compat skips the facts a model does not know",
                             fix="drop trace_unknown, or drop rome_compat")
        if self.rome_compat and "noise_std_from" in self.model_fields_set and self.noise_std_from != "dataset":
            raise InputError("noise_std_from", "rome_compat takes the noise std from the dataset's subjects",
                             fix="omit noise_std_from, or drop rome_compat")
        return self

    def cost(self, lab: Any) -> Estimate:
        """Forward rows of every grid (samples x components x layers x positions per fact, per model) and
        the peak of the biggest model's batch, grids and clean states."""
        facts = len(self.facts) or PACK_FACTS_GUESS
        facts = min(facts, self.max_facts) if self.max_facts else facts
        samples = getattr(self.corruption, "samples", 1)
        rows_total, peak = 0, 0
        for model in self.models:
            d = dims_of(lab, model)
            pos = positions(d, [f.template + f.clean_subject for f in self.facts] or ["x" * 32],
                            200 if self.chat else 0)
            per_fact = samples * (1 + len(self.components) * d.n_layers * pos + (d.n_layers * d.n_heads
                                                                                 if self.heads else 0))
            if self.mode == "approx":
                per_fact = samples * 3 + (per_fact if self.check_agreement else 0)
            if self.precision == "bfloat16":   # the float32 recomputation of each fact's sampled cells
                per_fact += samples * (2 + RECOMPUTED_CELLS * len(self.components) + len(self.components)
                                       * d.n_layers * pos * (self.mode == "approx" and not self.check_agreement))
            rows_total += facts * per_fact
            batch = min(ROWS_PER_BATCH, per_fact)
            grids = facts * len(self.components) * d.n_layers * pos * 8 * 3   # restored + indirect + record
            value = bytes_per_value(self.precision)
            clean = len(self.components) * d.n_layers * pos * d.d_model * value * (1 + samples)
            copy = weight_bytes(d, value) if self.precision == "bfloat16" else 0   # the bfloat16 copy beside
            peak = max(peak, forward_bytes(d, batch, pos, value_bytes=value) + grids + clean + copy)
        first = ("facts",) if self.facts else ("max_facts",)
        return Estimate(rows_total, peak, (*first, "corruption.samples", "components", "heads"))


# -- the typed records of trace_results.json ---------------------------------------------------


class TokenCategory(IntEnum):
    """Where a position sits relative to the subject and the scored token (one category per position)."""

    BEFORE_SUBJECT = 0
    FIRST_SUBJECT = 1
    MIDDLE_SUBJECT = 2
    LAST_SUBJECT = 3
    FIRST_SUBSEQUENT = 4
    FURTHER = 5
    SCORED = 6
    AFTER_SCORED = 7

    @property
    def label(self) -> str:
        return CATEGORY_LABELS[self]


CATEGORY_LABELS = ["before subject", "first subject token", "middle subject tokens", "last subject token",
                   "first subsequent token", "further tokens", "scored token", "after scored token"]
#: ROME's buckets (average_causal_effects notebook); they may overlap (a one-token subject is first and last)
ROME_BUCKETS = ["first subject token", "middle subject tokens", "last subject token", "first subsequent token",
                "further tokens", "last token"]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FactPeak(Record):
    component: str
    layer: int
    pos: int
    token: str
    effect: float


class FactCurves(Record):
    scored_patch: list[float] | None = Field(None, description="p(target) with the clean resid restored at the "
                                                               "scored position, per layer.")
    subject_patch: list[float] | None = Field(None, description="... at the last subject token, per layer.")
    context_patch: list[float] | None = Field(None, description="p(target) of the context-corrupted prompt with "
                                                                "the context word's clean resid restored, per layer.")
    context_p_corrupted: float | None = None
    context_clean_minus_corrupt: float | None = None


class FactRecord(Record):
    fact_id: str
    prompt: str
    subject: str
    target: str
    target_id: int
    tokens: list[str] = Field(description="Decoded text of each token (' Tower', not 'ĠTower').")
    subject_range: list[int]
    predict_pos: int
    categories: list[TokenCategory]
    p_clean: float
    p_corrupted: float
    clean_minus_corrupt: float
    correct: bool
    top_token: str
    held_out: bool = False
    notes: list[str] = Field(default_factory=list)
    noise_seed: int | None = Field(None, description="Seed of this fact's noise draw (None for swap).")
    restored: dict[str, list[list[float]]] = Field(description="component -> (layer, pos) p(target) restored.")
    indirect: dict[str, list[list[float]]] = Field(description="component -> (layer, pos) restored - corrupted.")
    approx_indirect: dict[str, list[list[float]]] | None = None
    agreement: dict[str, dict[str, Any]] | None = None
    approx_check: dict[str, dict[str, list[float]]] | None = Field(
        None, description="component -> {'approx': [...], 'exact': [...]} on the sampled cells (mode approx).")
    peak: FactPeak
    curves: FactCurves = Field(default_factory=FactCurves)
    heads: list[list[float]] | None = Field(None, description="(layer, head) p(target) with one head's clean "
                                                              "output restored at the scored position.")


class SkippedFact(Record):
    fact_id: str
    field: str
    reason: str
    unknown: bool = Field(False, description="Skipped because the model does not know it.")


class LayerRange(BaseModel):
    """Layers [first, last] where a (component, category) curve is >= half its maximum."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    component: str
    position: str
    first: int
    last: int
    max_layer: int
    max_effect: float
    band: float = Field(description="95% half-width at the maximum (t_975(n-1) sd/sqrt(n); ROME: 1.96).")
    n: int


class PeakSite(BaseModel):
    """The largest average indirect effect (p restored - p corrupted), its band, n and half-max range."""

    component: str
    layer: int
    position: str = Field(description="Token category.")
    effect: float
    band: float | None = None
    n: int | None = None
    first: int | None = None
    last: int | None = None


class HeadEffect(BaseModel):
    layer: int
    head: int
    effect: float


class ApproxCheck(BaseModel):
    """approx vs exact patching on sampled cells."""

    component: str
    cells: int
    spearman: float | None
    magnitude_ratio: float | None = Field(description="sum |approx| / sum |exact|.")
    verdict: Literal["agrees", "underestimates", "overestimates", "unclear"]


class ContextReading(BaseModel):
    effect: float = Field(description="Mean p_clean - p with the context word swapped.")
    until_layer: int | None = Field(description="Last layer where restoring the context word recovers half.")
    measurable: bool = Field(description="effect >= min_effect.")


class SubjectTokenReading(BaseModel):
    """Fact by fact, which subject token carries the largest effect (the averages read the last one, as ROME
    does; a fact whose effect sits on an earlier subject token is averaged into that category unseen)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    component: str
    n_facts: int = Field(description="Known facts with a subject of 2+ tokens and an effect >= min_effect on it.")
    at_last: int = Field(description="Of those, facts whose largest effect over the subject's tokens (any layer) "
                                     "is at the last subject token.")
    earlier: list[str] = Field(default_factory=list, description="The others, 'fact_id: token' (at most 5).")


class Readings(BaseModel):
    """Localisation readings (the summary states them in words)."""

    model_config = ConfigDict(extra="forbid")
    buckets: list[str] = Field(description="Token categories (ROME's under rome_compat).")
    bucket_n: list[int] = Field(description="Facts (ROME: token rows) averaged per category.")
    min_effect: float = Field(description="Smaller effects (p units) are reported as none.")
    ranges: list[LayerRange] = Field(default_factory=list)
    handoff_layer: int | None = Field(None, description="First layer where the last token's resid effect "
                                                        "overtakes the last subject token's.")
    arrival_layer: int | None = Field(None, description="First layer where the last token's resid recovers "
                                                        "half the total effect.")
    layer0_artifact: list[str] = Field(default_factory=list, description="Kinds whose peak only windows "
                                                                         "containing layer 0 reach (noise).")
    layer0_embedding: list[str] = Field(default_factory=list, description="['mlp'] when the subject's MLP effect "
                                        "is only in windows containing layer 0: an extended embedding, not storage.")
    context: ContextReading | None = None
    top_heads: list[HeadEffect] = Field(default_factory=list)
    approx: list[ApproxCheck] = Field(default_factory=list)
    subject_tokens: list[SubjectTokenReading] = Field(default_factory=list, description="Per component (mlp, "
                                                      "resid): facts whose subject effect peaks at the last "
                                                      "subject token vs an earlier one.")


class ModelRecord(Record):
    model: str
    lm_kind: Literal["causal", "masked"]
    family: str = ""
    n_layers: int
    n_heads: int | None = None
    fingerprint: str = ""
    window: int
    noise_std: float | None = Field(description="Noise unit used (None for swap); noise std = scale x this.")
    noise_std_from: str
    facts: list[FactRecord]
    skipped: list[SkippedFact] = Field(default_factory=list)
    aie: dict[str, list[list[float]]] = Field(description="component -> (layer, bucket) average indirect effect.")
    aie_band: dict[str, list[list[float]]] = Field(default_factory=dict, description="95% half-width.")
    categories: list[str]
    peak: PeakSite | None = Field(None, description="Largest average indirect effect over known facts.")
    readings: Readings
    curves_mean: dict[str, list[float]] = Field(default_factory=dict)
    n_known: int
    unknown_facts: list[str]
    mean_p_clean: float = Field(description="Mean clean p(target) over every traced fact, known or not.")
    mean_p_corrupted: float = Field(description="Mean corrupted p(target) over every traced fact, known or not.")
    mean_p_clean_known: float | None = Field(None, description="Mean clean p(target) over the known facts (those "
                                             "the averages use); None when none is known.")
    mean_p_corrupted_known: float | None = Field(None, description="Mean corrupted p(target) over the known facts.")
    notes: list[str] = Field(default_factory=list)
    precision: Literal["float32", "bfloat16"] = "float32"
    precision_agreement: Agreement | None = Field(None, description="bfloat16 runs: agreement with float32.")


class TraceResults(Record):
    """trace_results.json: everything a trace run measured (compare writes the same shape)."""

    status: Literal["complete", "partial"] = "complete"
    fact_set: str
    mode: str
    components: list[str]
    window: int | None = Field(None, description="Requested window (None: per model, see each model's window).")
    corruption: dict[str, Any]
    seed: int
    rome_compat: bool = False
    noise_std_from: str = "embeddings"
    models: dict[str, ModelRecord]
    interpretation: list[str] = Field(default_factory=list)
    agreement: dict[str, Any] | None = None
    relative_depth: bool = Field(False, description="compare: layers aligned as layer / n_layers.")


# -- the tool result ---------------------------------------------------------------------------


class ModelTrace(BaseModel):
    model: str
    lm_kind: Literal["causal", "masked"]
    n_layers: int
    n_facts: int
    n_known: int = Field(description="Facts whose clean top-1 is the target.")
    unknown_facts: list[str] = Field(description="Not known: skipped, or traced as a control; never averaged.")
    skipped: list[SkippedFact] = Field(default_factory=list, description="Facts that could not be traced.")
    mean_p_clean: float = Field(description="Over every traced fact, known or not (see mean_p_clean_known).")
    mean_p_corrupted: float = Field(description="Over every traced fact, known or not.")
    mean_p_clean_known: float | None = Field(None, description="Over the known facts only (the averages' facts).")
    mean_p_corrupted_known: float | None = Field(None, description="Over the known facts only.")
    window: int
    noise_std: float | None = Field(None, description="Noise unit; noise std = scale x this.")
    peak: PeakSite | None = None
    readings: Readings
    notes: list[str] = Field(default_factory=list)
    precision_agreement: Agreement | None = None


class TraceResult(RunResult):
    models: list[ModelTrace]
    interpretation: list[str] = Field(default_factory=list, description="Plain-language reading.")
    agreement: dict[str, Any] | None = Field(None, description="approx vs exact: pearson r, max |diff|, "
                                                                "peak agreement.")
    results: str = Field("", description="URI of trace_results.json.")
