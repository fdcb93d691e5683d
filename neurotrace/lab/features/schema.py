"""features' boundary models: the request (a dictionary, a corpus capture, what to page) and the result."""

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.jobs import BYTES, WIDTH_GUESS, Estimate
from neurotrace.lab.results import RunResult


class FeaturesRequest(BaseModel):
    """Feature pages of a dictionary over a corpus capture, the features a prompt fires, or a search by text."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "features"
    dictionary: str = Field(min_length=1, description="fit_sae run id or dictionary reference.")
    capture_run_id: str | None = Field(None, description="None: capture `corpus`.")
    corpus: str = "python-docs"
    max_tokens: int = Field(50_000, ge=128, le=5_000_000)
    model: str | None = None
    features: list[int] = Field(default_factory=list, max_length=20)
    prompt: str | None = Field(None, max_length=4000, description="Rank features on this text.")
    search: str | None = Field(None, max_length=200, description="Rank features by where this text occurs.")
    sort: Literal["max_activation", "frequency", "index"] = "max_activation"
    cursor: int = Field(0, ge=0, description="next_cursor.")
    page_size: int = Field(10, ge=1, le=100)
    n_top: int = Field(10, ge=1, le=100)
    n_quantiles: int = Field(5, ge=1, le=20)
    export_all: bool = False
    include_dense: bool = Field(False, description="Rank dense features (firing on more than 10% of corpus tokens) "
                                "with the rest on the prompt; default: after them.")
    device: str = "cpu"

    #: fixed page parameters (not request fields): samples per band, left context, tokens per logit list, seed
    per_quantile: ClassVar[int] = 3
    window: ClassVar[int] = 12
    n_tokens: ClassVar[int] = 10
    seed: ClassVar[int] = 0

    def cost(self, lab: Any) -> Estimate:
        """The corpus capture's contexts (when it captures) and the index: every row's 64 largest activations
        (index + value) plus one chunk of dense activations."""
        rows = 0 if self.capture_run_id else self.max_tokens // 128
        d_sae = 32 * WIDTH_GUESS
        return Estimate(rows=rows, bytes=int(self.max_tokens * 64 * 8 * 2 + 4096 * d_sae * BYTES * 2),
                        fields=("max_tokens",))


class Example(BaseModel):
    row: int = Field(description="Row of the capture (its states array).")
    context: int = Field(description="Context (trace line) index.")
    position: int = Field(description="Token position in the context.")
    activation: float
    token: str
    text: str = Field(description="Left context, the token in [[ ]], two tokens after.")


class TokenEffect(BaseModel):
    token: str
    value: float = Field(description="Decoder direction x final-norm scale x W_U (logit units per unit activation).")


class FeaturePage(BaseModel):
    index: int
    frequency: float = Field(description="Fraction of rows where it fires (activation > 0).")
    dense: bool = Field(False, description="Fires on more than 10% of the rows (shown only when true).",
                        exclude_if=lambda v: not v)
    max_activation: float
    mean_activation: float = Field(description="Mean over the rows where it fires.")
    top: list[Example] = Field(description="Top-activating contexts (first 3; all in the page file).")
    quantiles: list[Example] = Field(description="One sample from the highest, a middle and the lowest activation "
                                     "band (every band's samples in the page file).")
    promoted: list[TokenEffect] = Field(description="Tokens its decoder direction raises most (first 5).")
    suppressed: list[TokenEffect] = Field(description="Tokens it lowers most (first 5).")
    page: str = Field(description="The full page as Neuronpedia-compatible JSON: its path in the run (the URI is in "
                      "artifacts).")


class ListingRow(BaseModel):
    index: int
    frequency: float
    max_activation: float
    top_token: str = Field(description="Token of its top activation ('' if it never fired).")
    dense: bool = Field(False, description="Fires on more than 10% of the rows (shown only when true).",
                        exclude_if=lambda v: not v)


class PromptFeature(BaseModel):
    index: int
    activation: float = Field(description="Largest activation on the prompt.")
    token: str = Field(description="Token where it is largest.")
    position: int
    frequency: float = Field(description="Its firing frequency on the corpus.")
    score: float = Field(0.0, exclude=True, description="The rank key: activation x log10(1 / frequency), the "
                         "frequency floored at one corpus row (in tables/prompt_features.csv).")
    dense: bool = Field(False, description="Fires on more than 10% of the corpus rows; ranked after the rest "
                        "unless include_dense (shown only when true).", exclude_if=lambda v: not v)


class SearchHit(BaseModel):
    index: int
    f1: float = Field(description="Harmonic mean of recall (matches where it fires) and precision (firings that "
                      "are matches).")
    recall: float
    precision: float
    mean_activation: float = Field(description="Mean activation on the matching tokens.")


class FeaturesResult(RunResult):
    dictionary: str
    capture_run_id: str
    site: str
    d_sae: int
    n_rows: int = Field(description="Corpus rows encoded (special-token and position-0 rows left out).")
    dead_fraction: float = Field(description="Fraction of features that never fired on these rows.")
    n_dense: int = Field(0, description="Features firing on more than 10% of these rows (flagged `dense`).")
    pages: list[FeaturePage] = Field(default_factory=list)
    listing: list[ListingRow] = Field(default_factory=list, description="One page of all features in `sort` "
                                      "order; the whole table is tables/features.csv.")
    next_cursor: int | None = Field(None, description="cursor of the next listing page; None at the end.")
    prompt_features: list[PromptFeature] = Field(default_factory=list, description="Top 5 (20 in "
                                                 "tables/prompt_features.csv) by `score`, dense ones last.")
    search_hits: list[SearchHit] = Field(default_factory=list, description="Top 5 (20 in "
                                         "tables/search_hits.csv).")
    n_matches: int = Field(0, description="search: corpus tokens where the text occurs.")
    names: dict[str, str] = Field(default_factory=dict, description="Shown features' explain names and blind verdicts, where scored.")
