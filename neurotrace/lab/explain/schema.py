"""explain request and result: name what a neuron or dictionary feature does, and score the name blind.

The judge of a name (the client's LLM through MCP sampling, or the agent itself in the two-call form) sees held-out
text excerpts and never the activations; the server keeps the answer key apart from every served artifact.
"""

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neurotrace.lab.jobs import BYTES, Estimate, dims_of, forward_bytes
from neurotrace.lab.results import RunResult

RESULTS_FILE = "explain_results.json"
KEY_FILE = "quiz_key.json"  # written beside the run's artifacts, never listed in the manifest, so never served
MAX_EXPLANATION_CHARS = 300
Judge = Literal["auto", "sampling", "manual"]


class AnswerSheet(BaseModel):
    """The judge's answers to a quiz: the ids of the items it picked."""

    model_config = ConfigDict(extra="forbid")
    detection: list[int] = Field(default_factory=list, description="Detection ids that fire.")
    fuzzing: list[int] = Field(default_factory=list, description="Fuzzing ids marked correctly.")


class ExplainRequest(BaseModel):
    """Explain one unit (an MLP neuron 'L:i', an attention head 'L:H' or a dictionary feature) from corpus
    evidence and score the name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "explain"
    CLIENT_FALLBACK: ClassVar[str] = ("call explain with judge='manual': the first call returns the evidence and a quiz, "
                                      "the second sends quiz_run_id, explanation and answers")
    model: str = Field("", description="Model name or path.")
    neuron: str | None = Field(None, description="MLP neuron 'L:i' (layer:index).")
    head: str | None = Field(None, description="Attention head 'L:H': fires by the norm of its output (z).")
    feature: int | None = Field(None, ge=0, description="Feature index (with dictionary).")
    dictionary: str | None = Field(None, description="fit_sae run id or SAELens folder.")
    corpus: str = Field("python-docs", description="Built-in corpus or .txt/.jsonl file.")
    context_size: int = Field(64, ge=8, le=512, description="Tokens per context.")
    max_tokens: int = Field(32768, ge=512, le=1_000_000, description="Corpus tokens read.")
    fire_fraction: float = Field(0.2, gt=0, lt=1, description="Firing: above this share of the max.")
    n_quiz: int = Field(10, ge=2, le=50, description="Quiz items per class.")
    explanation: str | None = Field(None, description="A name to score.")
    judge: Judge = Field("auto", description="auto: sampling if offered.")
    quiz_run_id: str | None = Field(None, description="Second call: the quiz run.")
    answers: AnswerSheet | None = Field(None, description="Second call: picked ids.")
    batch_size: int = Field(16, ge=1, le=512, description="Contexts per forward.")
    seed: int = Field(0, description="Seed.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")

    def cost(self, lab: Any) -> Estimate:
        """One forward per corpus context (the second call of the two-call form runs none)."""
        if self.quiz_run_id:
            return Estimate(0, 0, ("quiz_run_id",))
        d = dims_of(lab, self.model)
        contexts = max(1, self.max_tokens // self.context_size)
        batch = min(contexts, self.batch_size)
        kept = contexts * self.context_size * (4 + 8)   # activations and token ids
        return Estimate(contexts, forward_bytes(d, batch, self.context_size) + kept + d.d_mlp * BYTES * batch *
                        self.context_size, ("max_tokens", "context_size", "batch_size"))

    @model_validator(mode="after")
    def _one_unit(self) -> "ExplainRequest":
        if self.quiz_run_id is not None:
            if self.answers is None or self.explanation is None:
                raise ValueError("quiz_run_id: the second call needs explanation and answers too. Fix: send "
                                 "quiz_run_id, explanation and answers {detection: [...], fuzzing: [...]}")
            return self
        if self.answers is not None:
            raise ValueError("answers: answers go with quiz_run_id (the quiz they answer). Fix: add quiz_run_id")
        if not self.model:
            raise ValueError("model: give the model. Fix: e.g. model='gemma-3-270m'")
        if sum(x is not None for x in (self.neuron, self.head, self.feature)) != 1:
            raise ValueError("neuron: give exactly one of neuron ('L:i'), head ('L:H') or feature (with dictionary)")
        if self.feature is not None and not self.dictionary:
            raise ValueError("dictionary: a feature needs its dictionary (a fit_sae run id or folder)")
        if self.explanation is not None and len(self.explanation) > MAX_EXPLANATION_CHARS:
            raise ValueError(f"explanation: {len(self.explanation)} characters is over the cap of "
                             f"{MAX_EXPLANATION_CHARS}. Fix: one sentence of at most {MAX_EXPLANATION_CHARS}")
        return self


class Excerpt(BaseModel):
    """A context window: its text with firing tokens marked <<so>>, and (evidence only) the activations."""

    model_config = ConfigDict(extra="forbid")
    text: str
    max_activation: float | None = None
    tokens: list[str] | None = None
    activations: list[float] | None = None


class Evidence(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unit: str = Field(description="'neuron L:i' or 'feature i of <dictionary>'.")
    site: str
    max_activation: float
    threshold: float = Field(description="Tokens above this activation count as firing.")
    density: float = Field(description="Share of corpus tokens that fire.")
    histogram: list[int] = Field(description="Counts of firing tokens' activations in 10 equal bins up to max.")
    top: list[Excerpt]
    quantiles: list[Excerpt] = Field(description="Firing contexts sampled across quantiles of their max.")
    promoted: list[str] = Field(description="Tokens the unit's output direction promotes (through W_U).")
    suppressed: list[str]


class QuizItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int
    text: str


class Quiz(BaseModel):
    """What the judge sees: no activations, no key."""

    model_config = ConfigDict(extra="forbid")
    detection: list[QuizItem] = Field(description="Held-out excerpts: which would the unit fire on?")
    fuzzing: list[QuizItem] = Field(description="Firing excerpts with tokens marked <<so>>: are the marks on "
                                    "the tokens the unit fires on?")


class QuizKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    detection: list[int] = Field(description="Ids of detection items that fire.")
    fuzzing: list[int] = Field(description="Ids of fuzzing items marked correctly.")
    detection_ids: list[int]
    fuzzing_ids: list[int]
    unit_key: str = Field("", description="Where the unit's labels are stored (labels.unit_key).")
    unit_index: str = Field("", description="The unit within that store: 'L:i' or the feature index.")
    seed: int = Field(0, description="The quiz's seed, which also seeds the scrambled-key null.")


class MethodScore(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int
    balanced_accuracy: float
    ci95: tuple[float, float] = Field(description="Wilson 95% interval of the accuracy (balanced classes).")
    null_mean: float = Field(description="Scrambled-key null: mean balanced accuracy of the same answers.")
    null_p95: float = Field(description="Scrambled-key null: 95th percentile.")
    p_value: float = Field(description="Share of scrambled keys scoring at least as well.")


class Scores(BaseModel):
    model_config = ConfigDict(extra="forbid")
    detection: MethodScore
    fuzzing: MethodScore
    verdict: Literal["predictive", "weak", "not predictive"]
    rule: str = Field(description="The thresholds the verdict applies.")


class ExplainResults(BaseModel):
    """explain_results.json."""

    model_config = ConfigDict(extra="forbid")
    model: str
    unit: str
    evidence: Evidence
    quiz: Quiz
    explanation: str | None = None
    explainer: str | None = Field(None, description="Who wrote it: 'sampling', 'given'.")
    judge: str | None = Field(None, description="'sampling' or 'manual'.")
    scores: Scores | None = None
    quiz_run_id: str | None = None


class ExplainResult(RunResult):
    model: str
    unit: str
    explanation: str | None = Field(None, description="The explanation scored (or None: quiz awaiting answers).")
    scores: Scores | None = None
    quiz: Quiz | None = Field(None, description="Two-call form: answer this quiz in the second call.")
    top: list[Excerpt] = Field(default_factory=list, description="The top activating excerpts (evidence).")
    promoted: list[str] = Field(default_factory=list)
