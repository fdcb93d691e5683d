"""fit_sae's boundary models: the request and the result."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.results import RunResult


class FitSAERequest(BaseModel):
    """Fit an SAE on one site of a capture run."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    capture_run: str = Field(min_length=1, description="run_id of a complete capture run.")
    site: str | None = Field(None, description="Which captured site; may be omitted if the run captured one.")
    architecture: Literal["relu", "topk"] = Field("topk", description="'topk': exactly k active features per "
                                                  "row; 'relu': ReLU with an L1 penalty of l1_coefficient.")
    expansion_factor: int = Field(4, ge=1, le=256, description="d_sae = expansion_factor * d_in unless d_sae "
                                  "is given.")
    d_sae: int | None = Field(None, ge=1, description="Number of features (overrides expansion_factor).")
    k: int = Field(8, ge=1, description="Active features per row (topk).")
    l1_coefficient: float = Field(1.0, ge=0, description="L1 penalty weight on decoder-norm-weighted "
                                  "activations (relu).")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    batch_size: int = Field(256, ge=1, description="Rows per optimizer step.")
    n_steps: int = Field(2000, ge=1, le=10_000_000, description="Optimizer steps.")
    seed: int = Field(0, description="Seeds the weight init and the batch order.")
    n_examples: int = Field(10, ge=1, le=100, description="Top-activating rows listed per feature.")
    context_tokens: int = Field(8, ge=0, le=64, description="Tokens of context shown before each example token.")
    splice_steps: int = Field(32, ge=0, description="Captured steps re-run with the reconstruction spliced "
                              "in (0 = skip the downstream metrics, no model is loaded).")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")


class FitSAEResult(RunResult):
    site: str
    d_in: int
    d_sae: int
    architecture: str
    n_rows: int = Field(description="Captured rows the SAE was fitted on.")
    metrics: dict[str, float | int | None] = Field(description="mse, fvu, l0, dead_fraction, final_loss and "
                                                   "the splice metrics (ce_clean, ce_spliced, ce_delta, "
                                                   "loss_recovered, kl_spliced, p_target_*).")
    sae: str = Field("", description="URI of sae.safetensors.")
    examples: str = Field("", description="URI of the top-activating examples CSV.")
