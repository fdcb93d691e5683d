"""intervene's boundary models: prompts, the request, feature effects and the result."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.intervention.policies import Policy
from neurotrace.lab.model.execution import Backend, Remote
from neurotrace.lab.model.sampling import SAMPLING_HELP, Greedy, Sampling
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
    fit_sae_run_id: str | None = Field(None, description="run_id of a fit_sae run (needed for feature policies "
                                       "and feature ranking).")
    prompts: list[str | PromptCase] = Field(min_length=1, description="Prompts, as strings or {prompt, target, "
                                            "foil}.")
    policies: list[Policy] = Field(default_factory=list, description="SAE edits ablate_features, clamp_features, "
                                   "patch_features and component edits zero, zero_heads, set_neurons, mean, patch, "
                                   "knockout; each with steps and positions. [] = a ranking-only pass.")
    max_new_tokens: int = Field(8, ge=0, le=256, description="Tokens generated per prompt (0 = one forward).")
    sampling: Sampling = Field(default_factory=Greedy, description=SAMPLING_HELP)
    controls: int = Field(3, ge=0, le=32, description="Random directions per prompt, each with the same norm as "
                          "the policies' change at each site and position (seeded); the verdict compares the "
                          "policies' effect with theirs (0 = no verdict).")
    rank_features: int = Field(16, ge=0, le=1024, description="SAE features ranked by causal effect per prompt "
                               "(0 = skip).")
    seed: int = Field(0, description="Seeds sampling and the random control directions.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    backend: Backend = "hf"
    remote: Remote = False


class FeatureEffect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feature: int
    effect: float = Field(description="Change in log p(target) in nats (or of the baseline's first token) when "
                          "ablated alone; mean over prompts in top_features.")
    activation: float = Field(description="Its largest activation on the prompt.")


class InterveneResult(RunResult):
    n_prompts: int
    mean_p_target_change: float | None = Field(None, description="Mean intervened - baseline p(target).")
    n_text_changed: int = Field(description="Prompts whose generated text changed.")
    top_features: list[FeatureEffect] = Field(default_factory=list, description="Features sorted by |effect| "
                                              "(nats of log p(target), mean over prompts).")
    effect: float | None = Field(None, description="Mean over prompts of the policies' change in log p(target) "
                                 "(nats) at their first active step.")
    control_effect: float | None = Field(None, description="Mean |change| (nats) of the same-norm random "
                                         "directions.")
    verdict: Literal["causal", "weak", "no measurable effect"] | None = Field(None, description="By the "
                                                                              "thresholds in the summary; null "
                                                                              "without policies or controls.")
    report: str = Field("", description="URI of report.json.")
