"""capture's boundary models: the request (prompts or a multi-step episode), the result, and the typed record of
capture.json."""

from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from neurotrace.lab.capture.edits import EDIT_KINDS, ComponentEdit
from neurotrace.lab.capture.generation import GenerationPath
from neurotrace.lab.jobs import BYTES, WIDTH_GUESS, Estimate
from neurotrace.lab.model.access.chat import CHAT_FIELD_HELP, Conversation
from neurotrace.lab.model.runtime.execution import Backend, Remote
from neurotrace.lab.model.runtime.precision import Agreement, InsistPrecision, Precision
from neurotrace.lab.results import RunResult


class EpisodeStep(BaseModel):
    """One step: text added to the transcript, then greedy generation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    text: str = Field(description="Text added before this step's generation (a prompt, a conversation turn).")
    max_new_tokens: int | None = Field(None, ge=0, le=512, description="Overrides the request's max_new_tokens.")
    target: str | None = Field(None, description="Optional answer word: its probability at the end of the "
                               "step's prompt is recorded in trace.jsonl (first token, leading space).")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Anything JSON; copied to trace.jsonl.")


class CaptureRequest(BaseModel):
    """Record activations at chosen sites over prompts or an episode, optionally intervening per step."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "capture"
    model: str = Field(min_length=1, description="Embedded name (e.g. 'fact-gpt2'), HuggingFace id or local dir.")
    sites: list[str] = Field(default_factory=lambda: ["blocks.*.hook_resid_post"], min_length=1,
                             description="Site name patterns: exact names, globs ('blocks.*.hook_mlp_out') "
                                         "or regexes prefixed 're:'.")
    prompts: list[str | EpisodeStep | Conversation] = Field(default_factory=list, description="Independent "
                                                            "prompts, one step each. Give either prompts or episode.")
    chat: bool = Field(False, description=CHAT_FIELD_HELP)
    episode: list[EpisodeStep] = Field(default_factory=list, description="Steps of one episode: each step "
                                       "continues the transcript including the previous outputs (causal LMs).")
    corpus: str | None = Field(None, description="Corpus instead of prompts: 'python-docs' or a .txt/.jsonl "
                               "input file. The built-in 'python-docs' is the Python 3.11 documentation's prose "
                               "(~6 MB, PSF licence, installed with the package); contexts of context_size tokens.")
    context_size: int = Field(128, ge=2, le=8192, description="corpus: tokens per context.")
    max_tokens: int = Field(100_000, ge=2, le=50_000_000, description="corpus: token budget.")
    seed: int = 0
    prepend_bos: bool = True
    batch_size: int = Field(16, ge=1, le=4096)
    joiner: str = Field(" ", description="Text placed before each later episode step's text.")
    max_new_tokens: int = Field(0, ge=0, le=512, description="Greedy tokens generated per step (0 = one "
                                "forward pass over the prompt).")
    positions: Literal["all", "last"] = Field("all", description="'all': a row per token of the recorded "
                                              "forward; 'last': one row per step, the prompt's last token.")
    skip_positions: int = Field(0, ge=0, description="Record no row for the first N positions of each step's "
                                "forward (e.g. 1 drops position 0, whose norm on real models can be ~100x the "
                                "rest and swamp an SAE).")
    skip_bos: bool = Field(False, description="Record no row for positions holding the BOS token.")
    interventions: list[ComponentEdit] = Field(default_factory=list, description="Step-scoped component "
                                               f"edits: {EDIT_KINDS}.")
    stop_at_eos: bool = Field(True, description="Stop a step's generation at the end-of-text token.")
    store_dtype: Literal["float32", "float16"] = Field("float32", description="dtype of the stored states.")
    chunk_rows: int = Field(4096, ge=1, description="Rows per site held in memory before flushing to disk.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    precision: Precision = "float32"
    insist_precision: InsistPrecision = False
    backend: Backend = "hf"
    remote: Remote = False

    def cost(self, lab: Any) -> Estimate:
        """One chunk of captured rows at every site before it is written out (and, over a corpus, one batch
        of contexts' forward). In bfloat16 the batch's activations take 2 bytes, and the float32 recheck
        holds its sampled steps' rows twice (5% of the rows, at least two steps' worth)."""
        sites = max(1, len(self.sites))
        vb = 2 if self.precision == "bfloat16" else BYTES
        if self.corpus:
            rows = min(self.chunk_rows, self.max_tokens)
            batch = self.batch_size * self.context_size * WIDTH_GUESS * vb * 4   # residual copies per token
            every, one = self.max_tokens, self.context_size
            fields: tuple[str, ...] = ("chunk_rows", "sites", "batch_size", "context_size")
        else:
            steps = max(1, len(self.prompts) + len(self.episode or ()))
            rows = min(self.chunk_rows, steps * (self.max_new_tokens + 512))
            batch, every, one = 0, steps * (self.max_new_tokens + 512), self.max_new_tokens + 512
            fields = ("chunk_rows", "sites", "prompts", "max_new_tokens")
        need = int(rows * sites * WIDTH_GUESS * BYTES + batch)
        if vb == BYTES:
            return Estimate(0, need, fields)
        kept = max(2 * one, every // 20) * sites * WIDTH_GUESS * BYTES * 2
        return Estimate(0, need + kept, (*fields, "precision"))


class CaptureResult(RunResult):
    n_steps: int
    n_rows: int = Field(description="Rows (recorded token positions) per site.")
    sites: list[str] = Field(description="Captured sites, in forward order.")
    widths: dict[str, int] = Field(description="Site -> state width D.")
    outputs: list[str] = Field(default_factory=list, description="Generated text per step (first 20).")
    trace: str = Field("", description="URI of trace.jsonl.")
    states: dict[str, str] = Field(default_factory=dict, description="Site -> URI of its [N, D] .npy.")
    precision: Literal["float32", "bfloat16"] = Field("float32", description="The precision the run used.")
    precision_agreement: Agreement | None = Field(None, description="bfloat16: agreement of a float32 recheck of a "
                                        "seeded sample of steps.")


class GenerationPlan(BaseModel):
    """The generation path a run (or one step or prompt of it) took, and why (see capture.generation)."""

    model_config = ConfigDict(extra="forbid")
    path: GenerationPath = Field(description="'kv_cache' (each position recorded from the forward where it was "
                                 "newest), 'recompute' (every forward over the whole sequence) or 'single_forward' "
                                 "(nothing generated).")
    reason: str = Field(description="Why that path: the first edit that forced recomputation, or why none did.")


class CaptureSite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(ge=1, description="State width D (values per row).")
    path: str = Field(description="The site's [N, D] states .npy, relative to the run directory.")


class CaptureRecord(BaseModel):
    """capture.json: what a capture run stored (fit_sae, intervene and capture's own patch/mean edits read it
    back). Runs written before skip_positions, skip_bos, special_ids and generation were recorded read with
    their defaults, and an old ``kind`` key reads as ``lm_kind``."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="The model as the request named it.")
    lm_kind: Literal["causal", "masked"] = Field(validation_alias=AliasChoices("lm_kind", "kind"),
                                                 description="LM head of the captured model.")
    fingerprint: str = Field(description="Weights fingerprint of the captured model (fit_sae checks it).")
    positions: Literal["all", "last"] = Field(description="'all': a row per recorded token; 'last': one per step.")
    skip_positions: int = Field(0, ge=0, description="Leading positions of each step that got no row.")
    skip_bos: bool = Field(False, description="Whether BOS positions got no row.")
    n_rows: int = Field(ge=0, description="Rows (recorded token positions) in every site's states array.")
    n_steps: int = Field(ge=0, description="Steps (lines of trace.jsonl).")
    store_dtype: Literal["float32", "float16"] = Field(description="dtype of the stored states.")
    special_ids: list[int] = Field(default_factory=list, description="The tokenizer's special token ids, sorted "
                                   "(fit_sae leaves their rows out; [] for runs that did not record them).")
    generation: GenerationPlan | None = Field(None, description="The run's generation path (null for runs "
                                              "written before it was recorded).")
    sites: dict[str, CaptureSite] = Field(description="Site -> its width and states file, in forward order.")
    # float32 records keep the keys they always had; a bfloat16 one adds these two
    precision: Literal["float32", "bfloat16"] = Field("float32", description="The precision the run used.",
                                                      exclude_if=lambda v: v == "float32")
    precision_agreement: Agreement | None = Field(None, description="bfloat16: the float32 recheck of a sample of steps.",
                                        exclude_if=lambda v: v is None)
