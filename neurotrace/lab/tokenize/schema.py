"""tokenize request and result: each text's tokens in each model, read from the tokenizer files alone."""

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.chat import PromptInput
from neurotrace.lab.model.weights.lora import ModelName
from neurotrace.lab.results import RunResult

TABLE_FILE = "tokens.json"
MAX_TEXTS, MAX_MODELS, MAX_TEXT_CHARS = 64, 8, 20_000


class TokenizeRequest(BaseModel):
    """Tokenize texts as the experiment tools do, in one or more models (no weights are loaded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "tokenize"
    texts: Annotated[list[PromptInput], Field(min_length=1, max_length=MAX_TEXTS,
                                              description="Texts or chat messages.")]
    models: Annotated[list[ModelName], Field(min_length=1, max_length=MAX_MODELS,
                                             description="Model names.")]
    @field_validator("texts")
    @classmethod
    def _bounded(cls, texts: list) -> list:
        for i, text in enumerate(texts):
            if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
                raise InputError(f"texts[{i}]", f"the text is {len(text):,} characters (at most {MAX_TEXT_CHARS:,})",
                                 fix="split it into shorter texts")
        return texts

    chat: bool = Field(False, description="Apply each model's chat template first (a list of messages always is).")
    special_tokens: bool = Field(True, description="Add the tokenizer's special tokens (e.g. BOS), as the "
                                                   "experiment tools do; false: the text's own tokens only.")


class TokenRow(BaseModel):
    """One text in one model."""

    model_config = ConfigDict(extra="forbid")
    model: str
    text: int = Field(description="Index into texts.")
    n_tokens: int
    ids: list[int] = Field(description="Token ids (the first `shown` of them).")
    tokens: list[str] = Field(description="Each token's decoded text.")
    shown: int = Field(description="Tokens listed here; all are in table_uri.")
    n_unknown: int = Field(0, description="Tokens that are the unknown token (out of vocabulary).")


class TokenTable(BaseModel):
    """tokens.json: every text's full token list in every model."""

    model_config = ConfigDict(extra="forbid")
    texts: dict[str, list[str]] = Field(description="Per model, the texts as tokenized (chat-templated where asked).")
    rows: list[TokenRow]


class TokenizeResult(RunResult):
    counts: dict[str, list[int]] = Field(description="Per model, each text's token count.")
    rows: list[TokenRow]
    table_uri: str = Field(description="Every token of every row (tokens.json).")
