"""steer request and result models."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.results import RunResult

Verdict = Literal["causal", "weak", "confounded", "no effect"]


class PairsDirection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pairs: list[tuple[str, str]] = Field(min_length=2, description="[concept, control] prompt pairs: direction = "
                                         "mean residual of concepts - of controls at the last token.")
    layer: int = Field(ge=0, description="blocks.{layer}.hook_resid_pre.")


class SAEDirection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sae_run: str = Field(min_length=1, description="A fit_sae run_id; the feature's decoder row, at the SAE's site.")
    feature: int = Field(ge=0)


class ProbeDirection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    probe_run_id: str = Field(min_length=1, description="A probe run_id; its direction at `layer`.")
    layer: int = Field(ge=0)


class SteerRequest(BaseModel):
    """Add a direction to the residual stream with an alpha sweep; measure target-token probabilities and text
    against random, shuffled and control-prompt controls."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1, description="Causal LM: embedded name, HuggingFace id or local directory.")
    direction_from: PairsDirection | SAEDirection | ProbeDirection = Field(
        description="{pairs, layer} | {sae_run, feature} | {probe_run_id, layer}.")
    prompts: list[str] = Field(min_length=1, description="Prompts steered and measured.")
    targets: list[str] = Field(min_length=1, description="Words whose summed next-token probability is the effect.")
    control_prompts: list[str] = Field(default_factory=list, description="Unrelated prompts: the same steering "
                                       "should move their p(targets) less.")
    layers: list[int] | None = Field(None, description="Layers the vector is added at (default: the direction's).")
    positions: Literal["all", "last"] = Field("all", description="Every token, or the last prompt token and each "
                                              "generated token.")
    alphas: list[float] = Field([0.25, 0.5, 1.0, 2.0], min_length=1, description="Added vector = alpha x mean "
                                "residual norm x unit direction (0 is always included).")
    n_random: int = Field(3, ge=1, le=20, description="Random same-norm directions (seeded).")
    max_new_tokens: int = Field(16, ge=0, le=256, description="Greedy steered text per prompt and alpha (0 = none).")
    min_effect: float = Field(0.05, ge=0, le=1, description="Smallest |change in p(targets)| that counts.")
    seed: int = 0
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"


class Effect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: float
    direction: float = Field(description="Mean change of p(targets) on prompts.")
    random: float = Field(description="Mean |change| over the random directions.")
    shuffled: float | None = Field(description="|change| with the shuffled direction (null if none).")
    control: float | None = Field(description="|change| on control_prompts (null if none).")


class SteerResult(RunResult):
    verdict: Verdict
    site: str = Field(description="Where the direction lives (first steered site).")
    ref_norm: float = Field(description="Mean residual norm the alphas are in units of.")
    p_base: float = Field(description="Mean p(targets) on prompts without steering.")
    effects: list[Effect] = Field(default_factory=list)
    monotonic: bool = Field(description="The direction's effect rises (or falls) monotonically with alpha.")
