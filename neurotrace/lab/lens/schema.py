"""logit_lens request and result: what each layer's residual stream predicts, read through the model's head."""

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.jobs import BYTES, Estimate, dims_of, forward_bytes, positions
from neurotrace.lab.model.access.chat import CHAT_FIELD_HELP, PromptInput
from neurotrace.lab.model.weights.lora import ModelName
from neurotrace.lab.results import RunResult

RESULTS_FILE = "logit_lens_results.json"


class LogitLensRequest(BaseModel):
    """Read the residual stream after every block through the final norm and unembedding."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "logit_lens"
    model: ModelName = Field(min_length=1, description="Embedded name (e.g. 'fact-gpt2'), HuggingFace id or local dir.")
    prompt: PromptInput = Field(min_length=1, description="The prompt (or chat messages); scored at its last token (masked LMs: at the mask).")
    chat: bool = Field(False, description=CHAT_FIELD_HELP)
    target: str | None = Field(None, description="Answer word whose p(target) is tracked (first token after a "
                               "space); default: the model's own top-1 prediction.")
    top_k: int = Field(5, ge=1, le=20, description="Top tokens kept per layer and position.")
    tuned: bool = Field(False, description="Also fit a tuned-lens-style affine translator per layer (ridge "
                        "least squares to the final residual) and report its held-out KL.")
    fit_prompts: list[str] = Field(default_factory=list, description="Extra prompts whose states (every "
                                   "position) fit the translators, with the prompt itself.")
    holdout: float = Field(0.25, ge=0.05, le=0.5, description="Fraction of fitting states held out for KL.")
    ridge: float = Field(1.0, ge=0.0, description="Ridge penalty pulling a translator towards the identity.")
    seed: int = Field(0, description="Seed of the held-out split.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")

    def cost(self, lab: Any) -> Estimate:
        """One forward per text; every layer's unembedding of every position; the tuned lens's weights."""
        d = dims_of(lab, self.model)
        texts = [self.prompt, *self.fit_prompts]
        pos = positions(d, texts)
        states = len(texts) * (d.n_layers + 1) * pos * d.d_model * BYTES
        lens = (d.n_layers + 1) * pos * d.d_vocab * BYTES                  # every row's unembedding
        tuned = (d.n_layers * d.d_model * d.d_model * BYTES * 3) if self.tuned else 0
        return Estimate(len(texts), forward_bytes(d, 1, pos) + states + lens + tuned,
                        ("fit_prompts", "prompt", "tuned"))


class TunedReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_train: int = Field(description="Fitting states (token positions).")
    n_heldout: int = Field(description="Held-out states the KL is measured on.")
    kl_logit_lens: list[float] = Field(description="Per row: mean KL(final || logit lens) on held-out states, nats.")
    kl_tuned: list[float] = Field(description="Per row: mean KL(final || tuned lens) on held-out states, nats.")
    p_target: list[float] = Field(description="Per row: tuned-lens p(target) at the scored position.")


class LogitLensResults(BaseModel):
    """logit_lens_results.json: every row's p(target) and top tokens at every position (figures read it back)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    prompt: str
    tokens: list[str] = Field(description="The prompt's tokens as text.")
    target: str = Field(description="The tracked token as text (e.g. ' Paris').")
    target_id: int
    scored_position: int = Field(description="The scored token position (last token; the mask for masked LMs).")
    rows: list[str] = Field(description="Row labels: 'embed' (before block 0), then 'block L' (after block L).")
    p_target: list[list[float]] = Field(description="(row, position) p(target).")
    top_tokens: list[list[list[str]]] = Field(description="(row, position, rank) the top-k tokens as text.")
    top_probs: list[list[list[float]]] = Field(description="(row, position, rank) their probabilities.")
    tuned: TunedReport | None = None


class LogitLensResult(RunResult):
    model: str
    tokens: list[str] = Field(description="The prompt's tokens as text.")
    target: str = Field(description="The tracked token as text (e.g. ' Paris').")
    target_id: int
    rows: list[str] = Field(description="Row labels: 'embed' (before block 0), then 'block L' (after block L).")
    scored_position: int = Field(description="The scored token position (last token; the mask for masked LMs).")
    p_target: list[float] = Field(description="Per row: p(target) at the scored position.")
    top_last: list[list[str]] = Field(description="Per row: the top-k tokens at the scored position.")
    first_top1_row: int | None = Field(description="First row index where the target is the top-1 token (None: "
                                       "never). A row index, not a layer: row 0 is the embedding, row L+1 is "
                                       "after block L.")
    first_top1_layer: int | None = Field(None, description="The layer L whose block's output first makes the target "
                                         "top-1 (first_top1_row - 1: the layer other tools name; None: never, or "
                                         "already at the embedding).")
    tuned: TunedReport | None = None
