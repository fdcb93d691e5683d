"""intervene's boundary models: prompts, the request, feature effects and the result."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.intervention.policies import Policy
from neurotrace.lab.results import RunResult


class PromptCase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt: str = Field(min_length=1, description="The input text.")
    target: str | None = Field(None, description="Expected next word; p(target) is reported (first token).")
    foil: str | None = Field(None, description="A competing word; logit(target) - logit(foil) is reported.")


class InterveneRequest(BaseModel):
    """Apply intervention policies per generation step and compare against the baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str | None = Field(None, description="The model; default: the model the SAE was fitted on.")
    sae_run: str | None = Field(None, description="run_id of a fit_sae run (needed for feature policies and "
                                "feature ranking).")
    prompts: list[str | PromptCase] = Field(min_length=1, description="Prompts, as strings or {prompt, target, "
                                            "foil}.")
    policies: list[Policy] = Field(min_length=1, description="ablate_features, clamp_features, patch_features, "
                                   "set_neurons, ablate_heads, patch_residual; each with steps and positions.")
    max_new_tokens: int = Field(8, ge=0, le=256, description="Tokens generated per prompt (0 = one forward).")
    temperature: float | None = Field(None, gt=0, description="null = greedy; else sample at this temperature "
                                      "with a generator seeded by `seed`.")
    rank_features: int = Field(16, ge=0, le=1024, description="SAE features ranked by causal effect per prompt "
                               "(0 = skip).")
    seed: int = Field(0, description="Seeds sampling (when temperature is set).")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"


class FeatureEffect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feature: int
    effect: float = Field(description="Change in log p(target) (or of the baseline token) when ablated alone.")
    activation: float = Field(description="Its largest activation on the prompt.")


class InterveneResult(RunResult):
    n_prompts: int
    mean_p_target_change: float | None = Field(None, description="Mean intervened - baseline p(target).")
    n_text_changed: int = Field(description="Prompts whose generated text changed.")
    top_features: list[FeatureEffect] = Field(default_factory=list, description="Features ranked by mean |effect| "
                                              "over prompts.")
    report: str = Field("", description="URI of report.json.")
