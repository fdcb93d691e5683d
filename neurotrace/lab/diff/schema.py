"""diff request and result: two models (or one model with its adapter on and off) on the same inputs."""

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neurotrace.lab.errors import InputError
from neurotrace.lab.jobs import BYTES, Estimate, dims_of, forward_bytes, positions
from neurotrace.lab.model.access.chat import CHAT_FIELD_HELP, PromptInput
from neurotrace.lab.model.weights.lora import ModelName
from neurotrace.lab.results import RunResult
from neurotrace.lab.sae import DictionaryRef

RESULTS_FILE = "diff_results.json"
MAX_PROMPTS = 256
MAX_FEATURE_ROWS = 50


class DiffRequest(BaseModel):
    """Compare a tuned model with its base (or any two models sharing a tokenizer) on the same inputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "diff"
    model: ModelName = Field(min_length=1, description="Tuned side: 'base+adapter' or a model.")
    base: ModelName | None = Field(None, description="Other side; omitted: adapter off.")
    prompts: list[PromptInput] = Field(default_factory=list, max_length=MAX_PROMPTS,
                                       description="Prompts (text or chat messages).")
    chat: bool = Field(False, description=CHAT_FIELD_HELP)
    corpus: str | None = Field(None, description="Or a corpus name or file.")
    max_contexts: int = Field(16, ge=1, le=512, description="Corpus contexts.")
    context_size: int = Field(32, ge=4, le=1024, description="Tokens per context.")
    max_new_tokens: int = Field(12, ge=0, le=64, description="Greedy tokens per side.")
    attention: bool = Field(True, description="Compare heads' patterns.")
    dictionary: DictionaryRef | None = None
    top_k: int = Field(5, ge=1, le=50)
    seed: int = Field(0, ge=0)
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")

    @model_validator(mode="after")
    def _inputs(self) -> "DiffRequest":
        if bool(self.prompts) == bool(self.corpus):
            raise InputError("prompts", "give prompts or a corpus (exactly one)",
                             fix='e.g. "prompts": ["The Eiffel Tower is located in the city of"]')
        if self.base is not None and self.base == self.model:
            raise InputError("base", "base and model are the same model",
                             fix="omit base to switch the model's adapter off, or name another model")
        return self

    def cost(self, lab: Any) -> Estimate:
        """Three sides (base, tuned, floor) per input: residual rows kept for CKA, patterns, lens rows, generation."""
        d = dims_of(lab, self.model)
        texts = ([p if isinstance(p, str) else " ".join(m.content for m in p) for p in self.prompts]
                 or ["x" * 4 * self.context_size])
        n = len(self.prompts) or self.max_contexts
        pos = positions(d, texts, 200 if self.chat else 0)
        states = 3 * n * (d.n_layers + 1) * pos * d.d_model * BYTES
        patterns = 3 * d.n_layers * d.n_heads * pos * pos * BYTES if self.attention else 0
        lens = 2 * (d.n_layers + 1) * d.d_vocab * BYTES + 3 * pos * d.d_vocab * BYTES
        d_sae = 32 * d.d_model                  # a wide dictionary: its weights and one input's activations per side
        features = (2 * d.d_model * d_sae + 3 * pos * d_sae) * BYTES if self.dictionary else 0
        rows = n * (3 + 2 * self.max_new_tokens)
        return Estimate(rows, forward_bytes(d, 1, pos + self.max_new_tokens, pos) + states + patterns + lens + features,
                        ("prompts", "max_contexts", "context_size", "attention", "max_new_tokens", "dictionary"))


class InputDiff(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int
    prompt: str = Field(description="The prompt (its last message for a conversation).")
    kl_last: float = Field(description="KL(base || tuned) of the next-token distribution at the last token, nats.")
    kl_max: float = Field(description="Largest per-token KL in the input, nats.")
    kl_max_position: int
    kl_max_token: str = Field(description="The token whose next-token prediction changed most.")
    base_top: str = Field(description="Base's top-1 next token at the last position.")
    tuned_top: str = Field(description="Tuned side's top-1 next token at the last position.")
    floor_kl_max: float = Field(description="The same measure for the noise-floor control.")
    above_floor: bool
    base_generation: str = ""
    tuned_generation: str = ""


class LayerDiff(BaseModel):
    model_config = ConfigDict(extra="forbid")
    row: str = Field(description="'embed' or 'block L' (residual after block L).")
    cosine: float = Field(description="Mean cosine similarity of base and tuned residuals over tokens.")
    rel_change: float = Field(description="Mean |tuned - base| / |base| over tokens.")
    cka: float = Field(description="Linear CKA of the two residual matrices over all tokens.")
    lens_kl: float = Field(description="Mean KL(base lens || tuned lens) at each input's last token, nats.")
    floor_rel_change: float
    floor_lens_kl: float


class HeadDiff(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layer: int
    head: int
    tv: float = Field(description="Mean total-variation distance of the attention rows (0..1).")
    floor_tv: float


class FeatureDiff(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feature: int
    base_mean: float = Field(description="Mean activation over the inputs' tokens, base side.")
    tuned_mean: float
    change: float = Field(description="tuned_mean - base_mean.")
    floor_change: float = Field(description="The same for the noise-floor side.")
    above_floor: bool
    top_input: int = Field(description="The input where the feature's mean changed most.")


class DiffResults(BaseModel):
    """diff_results.json: everything figures and tables are drawn from."""

    model_config = ConfigDict(extra="forbid")
    model: str
    base: str
    mode: str = Field(description="'adapter' (one load, adapter on vs off) or 'models' (two loads).")
    floor: str = Field(description="What the noise-floor control is.")
    chat: bool
    n_inputs: int
    n_tokens: int
    layers: list[LayerDiff]
    inputs: list[InputDiff]
    heads: list[HeadDiff]
    n_heads: int
    kl_tokens: list[list[float]] = Field(description="Per input, per token KL(base || tuned), nats.")
    tokens: list[list[str]]
    dictionary: str | None = Field(None, description="The dictionary whose features were compared.")
    dictionary_site: str | None = None
    features: list[FeatureDiff] = Field(default_factory=list, description="Features by |change|, the first "
                                        f"{MAX_FEATURE_ROWS}; all active ones in tables/features.csv.")


class DiffResult(RunResult):
    model: str
    base: str
    mode: str
    top_inputs: list[InputDiff] = Field(description="The inputs whose outputs changed most (by kl_max).")
    layers_above_floor: list[str] = Field(description="Rows whose residual change exceeds the floor's.")
    peak_layer: str = Field(description="Row with the largest relative residual change.")
    lens_divergence_from: str | None = Field(description="First row whose lens KL exceeds the floor's and 0.01 nats.")
    top_heads: list[HeadDiff]
    n_inputs_above_floor: int
    top_features: list[FeatureDiff] = Field(default_factory=list, description="With a dictionary: features "
                                            "whose mean activation changed most, above the floor.")
    n_features_above_floor: int | None = None
