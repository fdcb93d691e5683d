"""edit request and result models, and the typed record of edit_results.json."""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.errors import InputError
from neurotrace.lab.jobs import Dims, Estimate, dims_of, forward_bytes, positions
from neurotrace.lab.results import RunResult

Method = Literal["rome", "memit"]


class Rewrite(BaseModel):
    """One fact to rewrite: ``template.format(subject)`` should be followed by ``target_new``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    template: str = Field(description="Prompt with exactly one '{}' for the subject; the target follows it.")
    subject: str = Field(min_length=1, description="The subject whose fact is rewritten.")
    target_new: str = Field(min_length=1, description="The new answer: one token after the prompt.")
    target_true: str | None = Field(None, description="The answer the model gives now (default: its greedy "
                                                      "top-1 on the prompt).")
    relation: str = Field("", description="Relation name; neighbourhood facts share it.")
    id: str = Field("", description="Stable identifier (default: subject + relation).")
    paraphrases: list[str] = Field(default_factory=list, description="Other prompts with '{}' for the subject "
                                   "that ask the same thing (generalisation); default: the pack's.")


class ValueOptions(BaseModel):
    """The key's contexts and the value's optimisation (ROME's hyperparameters by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    n_contexts: int = Field(10, ge=0, le=50, description="Generated prefixes the key is averaged over "
                            "(ROME: prefix contexts; the bare prompt is always included).")
    steps: int = Field(25, ge=1, le=500, description="Adam steps optimising the value.")
    lr: float = Field(0.5, gt=0, le=10, description="Adam learning rate of the value optimisation.")
    kl_factor: float = Field(0.0625, ge=0, le=10, description="Weight of the KL term keeping '{subject} is a' "
                             "predictions (ROME: 0.0625).")
    weight_decay: float = Field(0.5, ge=0, le=10, description="Weight of |delta| / |v|^2 (ROME: 0.5).")
    clamp_norm: float | None = Field(None, gt=0, le=100, description="|delta| <= clamp_norm x |v|. Default: ROME's "
                                     "4, or 0.65 on models that normalise the MLP output (Gemma 2/3, OLMo 2).")


class CovarianceOptions(BaseModel):
    """Where the key covariance comes from, and MEMIT's weight on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    corpus: str = Field("python-docs", min_length=1, description="A built-in corpus ('python-docs') or a UTF-8 "
                        ".txt/.jsonl file under the input directories.")
    tokens: int = Field(16384, ge=256, le=1_000_000, description="Corpus tokens C is estimated from.")
    memit_lambda: float = Field(15000.0, gt=0, description="memit: weight of C against the new keys (MEMIT's "
                                "mom2_update_weight).")


class EditRequest(BaseModel):
    """Rewrite facts in a model's MLP weights (ROME or MEMIT) and measure the edit as CounterFact does."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "edit"
    model: str = Field(min_length=1, description="Causal LM (or an edited one). Catalog, embedded, hub "
                                                  "id or directory.")
    rewrites: list[Rewrite] = Field(default_factory=list, description="Facts inline. Each: template, subject, "
                                    "target_new (target_true, relation, paraphrases optional).")
    pack: str | None = Field(None, description="A built-in fact pack. Each "
                             "fact's new target is the answer of another fact of the same relation (CounterFact).")
    max_facts: Annotated[int | None, Field(ge=1, le=200, description="Pack facts edited, at most.")] = None
    method: Method = Field("rome", description="rome: one by one; memit: together.")
    layers: list[int] | None = Field(None, description="rome: one layer; memit: a range. Default: the "
                                     "layer the model's latest trace located (MLP, last subject token), else "
                                     "ROME's choice (about a third of the depth); memit: 5 layers ending there.")
    sweep_layers: bool = Field(False, description="Also edit every layer, beside the trace. "
                               "Efficacy per layer is set beside the trace's indirect effect for the same facts: "
                               "correlation and figure.")
    trace_run_id: str | None = Field(None, description="Trace giving the layer (default: latest). It also "
                                     "gives the sweep's indirect effects.")
    value: ValueOptions = Field(default_factory=lambda: ValueOptions(),
                                description="Key/value settings (ROME's).")
    covariance: CovarianceOptions = Field(default_factory=lambda: CovarianceOptions(), description="Corpus of "
                                          "C = E[k k^T]. Cached per model and layer; MEMIT weighs it against the "
                                          "new keys.")
    max_new_tokens: int = Field(24, ge=0, le=200, description="Tokens generated for fluency. 0: none; also read for "
                                "consistency.")
    seed: int = 0
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")

    def shape_check(self, d: Dims) -> None:
        """Layers against the model's depth (the run checks the same once it loads)."""
        if self.layers is not None:
            bad = [x for x in self.layers if not 0 <= x < d.n_layers]
            if bad or not self.layers:
                raise InputError("layers", f"layers {bad or self.layers} are out of range for {self.model!r} "
                                 f"({d.n_layers} layers)", fix=f"use layers in 0..{d.n_layers - 1}, or omit `layers`")

    def cost(self, lab: Any) -> Estimate:
        """Per fact and layer: the value optimisation (steps x the prefixed prompts, forward and backward), the
        readings and generations; once: the covariance forwards (cached after) and C per layer (float64)."""
        d = dims_of(lab, self.model)
        facts = len(self.rewrites) or self.max_facts or 128
        layers = d.n_layers if self.sweep_layers else max(1, len(self.layers or [1]))
        rows_per = self.value.n_contexts + 2                           # prefixed prompts + the KL prompt
        pos = positions(d, [r.template + r.subject for r in self.rewrites], 24)
        rows = facts * layers * (self.value.steps * rows_per + 40 + 2 * self.max_new_tokens)
        rows += -(-self.covariance.tokens // 128)
        covs = (d.n_layers if self.sweep_layers else layers) * d.d_mlp * d.d_mlp * 8
        return Estimate(rows, 3 * forward_bytes(d, rows_per, pos, pos) + covs + forward_bytes(d, 16, 128),
                        ("max_facts", "rewrites", "sweep_layers", "value", "covariance"))


class Score(BaseModel):
    """A rate or mean with its sample size and 95% band (Wilson for rates, Student t for means)."""

    model_config = ConfigDict(extra="forbid")
    value: float | None
    n: int
    low: float | None = None
    high: float | None = None


class MetricPair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    before: Score
    after: Score


class Metrics(BaseModel):
    """CounterFact's metrics (Meng et al. 2022), before and after the edit."""

    model_config = ConfigDict(extra="forbid")
    efficacy: MetricPair = Field(description="Share of edit prompts where p(new) > p(true).")
    generalisation: MetricPair = Field(description="The same on paraphrases.")
    specificity: MetricPair = Field(description="Neighbourhood (same relation, other subjects): share where the "
                                    "neighbour's own answer still beats the new target.")
    unrelated: MetricPair = Field(description="Facts of other relations: share whose top-1 is unchanged.")
    fluency: MetricPair = Field(description="Weighted bi/tri-gram entropy of generations (ROME).")
    consistency: MetricPair = Field(description="TF-IDF cosine of generations about the subject to reference "
                                    "text about the new target (ROME's reference score; reference text is the "
                                    "original model's own text on the new target).")


class FactEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    prompt: str
    subject: str
    target_true: str
    target_new: str
    layers: list[int]
    p_new_before: float
    p_new_after: float
    p_true_before: float
    p_true_after: float
    success: bool = Field(description="p(new) > p(true) after the edit.")
    delta_norm: float = Field(description="|v* - W k*| of the rank-one update (value space).")


class SweepPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layer: int
    efficacy: float = Field(description="Share of facts whose edit at this layer succeeds.")
    rewrite_gain: float = Field(description="Mean p(new) after - before.")
    indirect_effect: float | None = Field(description="Trace: mean indirect effect of the MLP at the last "
                                          "subject token, over the same facts.")


class Sweep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trace_run_id: str | None
    points: list[SweepPoint]
    pearson_layers: float | None = Field(description="Across layers: r(indirect effect, rewrite gain).")
    pearson_pairs: float | None = Field(description="Across (fact, layer) pairs: r(indirect effect, p(new) "
                                        "gain) - Hase et al.'s test.")
    n_pairs: int
    best_edit_layer: int
    located_layer: int | None


class EditResults(BaseModel):
    """edit_results.json."""

    model_config = ConfigDict(extra="forbid")
    model: str
    edited_model: str
    method: Method
    layers: list[int]
    layer_source: str
    facts: list[FactEdit]
    unknown: list[str] = Field(description="Facts left unedited: the model does not give target_true now.")
    metrics: Metrics
    covariance: dict[str, str | int]
    sweep: Sweep | None = None
    notes: list[str] = Field(default_factory=list)


class EditResult(RunResult):
    model: str
    edited_model: str = Field(description="The edited model's name: pass it as `model` to any tool "
                              "(trace, logit_lens ...). The original is unchanged.")
    method: Method
    layers: list[int]
    layer_source: str = Field(description="Where the layer came from (request, trace run, ROME's choice).")
    n_edited: int
    unknown: list[str] = Field(description="Facts not edited because the model does not know them.")
    metrics: Metrics
    sweep: Sweep | None = None
    delta: str = Field("", description="URI of the weight delta (safetensors).")
    results: str = Field("", description="URI of edit_results.json.")
