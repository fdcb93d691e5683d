"""attention request and result: per-head patterns of a prompt and head-type scores."""

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.errors import InputError
from neurotrace.lab.jobs import BYTES, Dims, Estimate, dims_of, forward_bytes, positions
from neurotrace.lab.model.access.chat import CHAT_FIELD_HELP, PromptInput
from neurotrace.lab.model.weights.lora import ModelName
from neurotrace.lab.results import RunResult

RESULTS_FILE = "attention_results.json"
SCORE_KINDS = ("previous_token", "induction", "duplicate_token", "subject")
ScoreKind = Literal["previous_token", "induction", "duplicate_token", "subject"]


class AttentionRequest(BaseModel):
    """Attention patterns of every head for a prompt, and which heads are previous-token, induction,
    duplicate-token or subject heads."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "attention"
    model: ModelName = Field(min_length=1, description="Embedded name (e.g. 'fact-gpt2'), HuggingFace id or local dir.")
    prompt: PromptInput = Field(min_length=1, description="The prompt (or chat messages); scored at its last token (masked LMs: at the mask).")
    chat: bool = Field(False, description=CHAT_FIELD_HELP)
    heads: list[str] = Field(default_factory=list, description="Heads to report and draw, 'L:H' or 'L:*' (every "
                             "head of layer L); default: the highest-scoring heads. Patterns of all heads are saved.")
    subject: str | None = Field(None, description="A substring of the prompt; scores how much the last position "
                                "attends to its tokens.")
    induction_len: int = Field(12, ge=2, le=128, description="Length of the random token sequence repeated "
                               "twice for the induction, duplicate- and previous-token scores.")
    top_k: int = Field(3, ge=1, le=10, description="Source tokens listed per head for the last position.")
    seed: int = Field(0, description="Seed of the random repeated sequence.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")

    def shape_check(self, d: Dims) -> None:
        """Every head reference against the model's layers and heads (the run checks the same once it loads)."""
        from neurotrace.lab.attention.run import parse_heads  # the run's own parser (it imports this module)

        parse_heads(self.heads, d.n_layers, d.n_heads)
        if self.subject is not None and isinstance(self.prompt, str) and (not self.subject.strip()
                                                                         or self.subject not in self.prompt):
            raise InputError("subject", f"{self.subject!r} does not occur in the prompt",
                             fix="give a substring of the prompt")

    def cost(self, lab: Any) -> Estimate:
        """Two forwards (the prompt, the induction sequence) keeping every head's pattern."""
        d = dims_of(lab, self.model)
        pos = max(positions(d, [self.prompt]), min(d.max_positions, 2 * self.induction_len + 1))
        patterns = d.n_layers * d.n_heads * pos * pos * BYTES * 2            # prompt + induction sequence
        return Estimate(2, forward_bytes(d, 1, pos, pos) + patterns, ("prompt", "induction_len"))


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    position: int
    token: str
    weight: float = Field(description="Attention weight from the last position, 0..1.")


class HeadFocus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    head: str = Field(description="'L:H'.")
    sources: list[Source] = Field(description="Where the last position attends most.")


class HeadScore(BaseModel):
    model_config = ConfigDict(extra="forbid")
    head: str
    score: float = Field(description="Mean attention weight on the scored source, 0..1.")


class AttentionResults(BaseModel):
    """attention_results.json: head-type scores of every head and the patterns of the reported heads (the full
    (layer, head, query, key) patterns are in arrays/patterns.npy)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    prompt: str
    tokens: list[str] = Field(description="The prompt's tokens as text.")
    shown: list[tuple[int, int]] = Field(description="The reported heads as (layer, head).")
    scores: dict[ScoreKind, list[list[float]]] = Field(description="Score kind -> (layer, head) score, 0..1 "
                                                         "('subject' only when a subject was given).")
    shown_patterns: dict[str, list[list[float]]] = Field(description="'L:H' -> (query, key) attention weights of "
                                                         "each reported head.")
    last_position: list[HeadFocus] = Field(description="For the reported heads: where the scored position attends.")
    scored_position: int = Field(description="The scored token position (last token; the mask for masked LMs).")
    attn_implementation: str = Field(description="The attention implementation patterns were read with.")


class AttentionResult(RunResult):
    model: str
    tokens: list[str] = Field(description="The prompt's tokens as text.")
    n_layers: int
    n_heads: int
    last_position: list[HeadFocus] = Field(description="For the reported heads: where the scored position (the last "
                                           "token; the mask for masked LMs) attends.")
    top_heads: dict[str, list[HeadScore]] = Field(description="Score kind -> the 5 highest-scoring heads. Kinds: "
                                                  "previous_token, induction, duplicate_token, subject.")
    attn_implementation: str = Field(description="The attention implementation patterns were read with.")
