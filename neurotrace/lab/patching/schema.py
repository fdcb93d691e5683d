"""patch request and result: activation patching of a clean/corrupt prompt pair; the record of patch_results.json."""

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.errors import InputError
from neurotrace.lab.jobs import Dims, Estimate, dims_of, forward_bytes, positions, prompt_texts
from neurotrace.lab.model.access.chat import CHAT_FIELD_HELP, PromptInput
from neurotrace.lab.model.runtime.precision import Agreement, InsistPrecision, Precision, bytes_per_value
from neurotrace.lab.results import RunResult

PATCH_RESULTS_FILE = "patch_results.json"
PatchComponent = Literal["resid_pre", "attn_out", "mlp_out", "head_out", "head_out_pos", "head_q", "head_k", "head_v",
                    "head_pattern", "path"]
PatchMetric = Literal["logit_diff", "p_target", "kl"]


class PatchRequest(BaseModel):
    """Patch clean activations into the corrupt run, one component (and position) at a time."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "patch"
    model: str = Field(min_length=1, description="Embedded name (e.g. 'fact-gpt2'), HuggingFace id or local dir "
                       "(causal LMs).")
    clean: PromptInput = Field(min_length=1, description="The clean prompt; its last token is the scored position.")
    corrupt: PromptInput = Field(min_length=1, description="The corrupt prompt, same token length (e.g. another subject).")
    chat: bool = Field(False, description=CHAT_FIELD_HELP)
    metric: PatchMetric = Field("logit_diff", description="'logit_diff' (target - contrast logit), 'p_target', or "
                                "'kl' (KL(clean || patched), nats; lower = more restored).")
    target: str | None = Field(None, description="Answer word; default the clean run's top-1 token.")
    contrast: str | None = Field(None, description="Second word for logit_diff; default the corrupt run's top-1.")
    components: list[PatchComponent] = Field(default_factory=lambda: ["resid_pre", "attn_out", "mlp_out"], min_length=1,
                                   description="resid_pre / attn_out / mlp_out: per layer x position; head_out: per "
                                   "layer x head, all positions; head_out_pos: per layer x position x head; head_q/k/v/pattern: a "
                                   "head's queries, keys, values or pattern, all positions (k/v per key-value head); path: path "
                                   "patching of every earlier sender head into the receivers.")
    receivers: list[str] = Field(default_factory=list, description="Receiver heads 'L:H' for components 'path'.")
    receiver_parts: list[Literal["q", "k", "v"]] = Field(default_factory=lambda: ["q", "k", "v"], min_length=1,
                                                         description="Which inputs of the receivers get the path.")
    batch_size: int = Field(32, ge=1, le=1024, description="Patched runs per forward (rows of one batch).")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    precision: Precision = "float32"
    insist_precision: InsistPrecision = False

    def shape_check(self, d: Dims) -> None:
        """Receivers against components and the model's layers and heads (the run checks the same once it
        has loaded the model and run both prompts)."""
        from neurotrace.lab.patching.path import parse_receivers  # the run's own parser

        if ("path" in self.components) != bool(self.receivers):
            raise InputError("receivers", "path patching needs receivers, and receivers need components to include "
                             "'path'", fix="give both components=[..., 'path'] and receivers=['L:H', ...], or neither")
        if self.receivers:
            parse_receivers(self.receivers, d.n_layers, d.n_heads)

    def cost(self, lab: Any) -> Estimate:
        """One forward per patched cell (and per path-patching receiver), the clean and corrupt caches; in
        bfloat16 activations take 2 bytes, and the float32 check adds its sampled cells."""
        d = dims_of(lab, self.model)
        pos = positions(d, prompt_texts([self.clean, self.corrupt]), 200 if self.chat else 0)
        cells = len(self.components) * d.n_layers * (pos + d.n_heads) \
            + len(self.receivers) * len(self.receiver_parts) * d.n_layers * d.n_heads
        value = bytes_per_value(self.precision)
        check = (2 + 8 + 2 * len(self.components)) if self.precision == "bfloat16" else 0
        cache = 2 * d.n_layers * 4 * pos * d.d_model * value       # clean + corrupt states at every site
        return Estimate(cells + 2 + check, forward_bytes(d, self.batch_size, pos, value_bytes=value) + cache,
                        ("batch_size", "components", "receivers", "clean"))


class PatchCell(BaseModel):
    model_config = ConfigDict(extra="forbid")
    component: PatchComponent
    layer: int
    position: int | None = Field(description="Patched position (None: all positions).")
    head: int | None = None
    token: str | None = Field(description="The clean token at the position.")
    value: float = Field(description="The metric with this component patched.")
    restored: float = Field(description="(value - corrupt) / (clean - corrupt): 1 = fully restored, 0 = no effect.")
    through_layer: int | None = Field(None, description="resid_pre: the same position's residual restores about as "
                                      "much (within 0.1) at every layer from `layer` to this one; one cell stands "
                                      "for the run.")
    note: str | None = Field(None, description="A caution on reading this cell (e.g. the layer-0 residual is the "
                             "input token itself).")


#: a component's grid: (layer, position), (layer, head) or (layer, position, head); None where a head is no sender
PatchGrid = list[list[float | None]] | list[list[list[float | None]]]


class PatchResults(BaseModel):
    """patch_results.json: every patched component's grid, as the metric and as the fraction restored."""

    model_config = ConfigDict(extra="forbid")
    model: str
    clean: str
    corrupt: str
    tokens: list[str] = Field(description="Clean tokens as text.")
    corrupt_tokens: list[str] = Field(description="Corrupt tokens as text.")
    metric: PatchMetric
    target: str = Field(description="The target token as text.")
    contrast: str | None = Field(None, description="The contrast token as text (logit_diff only).")
    metric_clean: float
    metric_corrupt: float
    values: dict[PatchComponent, PatchGrid] = Field(description="Component -> the metric with each cell patched, "
                                                    "in the order the components were asked for.")
    restored: dict[PatchComponent, PatchGrid] = Field(description="Component -> (value - corrupt) / (clean - "
                                                      "corrupt) per cell.")


class PatchResult(RunResult):
    model: str
    tokens: list[str] = Field(description="Clean tokens as text.")
    differing: list[int] = Field(description="Positions where the clean and corrupt tokens differ.")
    target: str
    contrast: str | None = None
    metric: PatchMetric
    metric_clean: float
    metric_corrupt: float
    top: list[PatchCell] = Field(description="The 10 cells that restore most (largest signed `restored`, > 0), "
                                 "over every kind; a run of consecutive resid_pre layers at one position that "
                                 "restore alike is one cell (`through_layer`); the residual at the last position is "
                                 "left out (it restores trivially).")
    anti: list[PatchCell] = Field(default_factory=list, description="The cells that move the metric further from "
                                  "clean (`restored` < -0.01), most negative first.")
    precision_agreement: Agreement | None = None
