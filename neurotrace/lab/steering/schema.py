"""steer request and result models, and the typed record of steer_results.json."""

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neurotrace.lab.effects import Damage
from neurotrace.lab.errors import InputError
from neurotrace.lab.jobs import BYTES, Dims, Estimate, dims_of, forward_bytes, positions
from neurotrace.lab.model.access.chat import CHAT_FIELD_HELP
from neurotrace.lab.model.weights.lora import ModelName
from neurotrace.lab.results import RunResult
from neurotrace.lab.sae import DictionaryRef

Verdict = Literal["causal", "weak", "confounded", "no effect", "destructive"]


class PairsDirection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pairs: list[tuple[str, str]] = Field(min_length=2, description="[concept, control] prompts; direction = mean "
                                         "difference of blocks.{layer}.hook_resid_pre at the last token.")
    layer: int = Field(ge=0)


class SAEDirection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    fit_sae_run_id: str | None = Field(None, min_length=1, description="fit_sae run_id: the feature's decoder row.")
    dictionary: DictionaryRef | None = None
    feature: int = Field(ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> "SAEDirection":
        if (self.fit_sae_run_id is None) == (self.dictionary is None):
            raise ValueError("give exactly one of fit_sae_run_id or dictionary")
        return self


class ProbeDirection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    probe_run_id: str = Field(min_length=1)
    layer: int = Field(ge=0)


class SteerRequest(BaseModel):
    """Add a direction to the residual stream with an alpha sweep; measure target-token probabilities and text
    against random, shuffled and control-prompt controls."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "steer"
    model: ModelName = Field(min_length=1, description="Causal LM: embedded name, HuggingFace id or local directory.")
    direction_from: PairsDirection | SAEDirection | ProbeDirection
    prompts: list[str] = Field(min_length=1, description="Prompts steered and measured.")
    targets: list[str] = Field(min_length=1, description="Words whose summed next-token probability is the effect.")
    control_prompts: list[str] = Field(default_factory=list, description="Unrelated prompts (should move less).")
    chat: bool = Field(False, description=CHAT_FIELD_HELP)
    layers: list[int] | None = Field(None, description="Layers the vector is added at (default: the direction's).")
    positions: Literal["all", "last"] = Field("all", description="'last': last prompt token + generated ones.")
    alphas: list[float] = Field([0.05, 0.1, 0.2, 0.4], min_length=1, description="Multiples of the mean residual "
                                "norm at the site (0 is added); the verdict is read at the largest not destructive.")
    concept_words: list[str] = Field(default_factory=list, description="Words counted in the steered text for "
                                     "the concept score (targets always count; prefix match).")
    contrast_words: list[str] = Field(default_factory=list, description="Words counted against it.")
    n_random: int = Field(3, ge=1, le=20, description="Random same-norm directions (seeded).")
    max_new_tokens: int = Field(16, ge=0, le=256, description="Steered greedy text (0 = none).")
    min_effect: float = Field(0.05, ge=0, le=1, description="Smallest |change of p(targets)| that counts.")
    seed: int = 0
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")

    def shape_check(self, d: Dims) -> None:
        """A pairs direction's layer against the model's depth (the run checks the same once it loads)."""
        spec = self.direction_from
        if isinstance(spec, PairsDirection) and spec.layer >= d.n_layers:
            raise InputError("direction_from.layer", f"layer {spec.layer} is out of range ({d.n_layers} layers)",
                             fix=f"use 0..{d.n_layers - 1}")

    def cost(self, lab: Any) -> Estimate:
        """Every prompt under every alpha and arm (steered, unsteered, random directions), token by token."""
        d = dims_of(lab, self.model)
        prompts = [*self.prompts, *self.control_prompts,
                   *[p for pair in getattr(self.direction_from, "pairs", []) for p in pair]]
        pos = positions(d, prompts, self.max_new_tokens)
        arms = len(self.alphas) * (2 + self.n_random) + len(self.alphas) * 2     # + damage on neutral text
        rows = len(prompts) * arms * max(1, self.max_new_tokens)
        batch = min(len(prompts) * arms, 256)                             # steering.measure.MAX_ROWS
        kept = len(prompts) * (d.d_model + arms * 2) * BYTES * 4           # pooled states, p(targets) per arm
        return Estimate(rows, forward_bytes(d, batch, pos) + kept, ("prompts", "alphas", "n_random", "max_new_tokens"))


class Effect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: float
    direction: float = Field(description="Mean change of p(targets).")
    random: float = Field(description="Mean |change|, random directions.")
    shuffled: float | None
    control: float | None = Field(description="|change| on control_prompts.")
    concept: float | None = Field(None, description="Change of the concept score of the steered generations "
                                  "((concept words - contrast words) per word) from alpha 0; null without text.")
    concept_random: float | None = Field(None, description="The random directions' largest |change| of it.")
    kl: float | None = Field(None, description="The direction's KL on neutral text at this alpha (nats/token).")
    destructive: bool = Field(False, description="The direction at this alpha breaks neutral text or generations.")


class SteerResults(BaseModel):
    """steer_results.json: the alpha sweep's change of p(targets) for the direction and each control."""

    model_config = ConfigDict(extra="forbid")
    model: str
    source: str = Field(description="Where the direction comes from, in a few words.")
    sites: list[str] = Field(description="Sites the vector is added at.")
    positions: Literal["all", "last"]
    targets: list[str]
    alphas: list[float] = Field(description="The sweep, in units of ref_norm (0 included).")
    ref_norm: float = Field(description="The alphas' unit: the mean residual norm.")
    p_base: float = Field(description="p(targets) unsteered, mean over prompts.")
    p_direction: list[float] = Field(description="Per alpha: mean p(targets) along the direction.")
    curves: dict[str, list[float]] = Field(description="Condition ('direction', 'random_K', 'shuffled', "
                                           "'control_prompts') -> per alpha the mean signed change of p(targets).")
    verdict: Verdict
    alpha_max: float = Field(description="The alpha the verdict is read at: the largest |alpha| that is not "
                             "destructive (the largest |alpha| when every one is).")
    verdict_metric: str = Field("p(targets)", description="What decided the verdict: 'p(targets)' (next token) or "
                                "'concept score' (the generations).")
    concept: dict[str, list[float]] = Field(default_factory=dict, description="Condition ('direction', 'random_K') "
                                            "-> per alpha the change of the generations' concept score.")
    damage: list[Damage] = Field(default_factory=list, description="Per alpha: the direction on neutral text and "
                                 "its generations.")
    n_prompts: int
    n_control: int = Field(description="Control prompts (0: none).")


class SteerResult(RunResult):
    verdict: Verdict
    alpha_verdict: float | None = Field(None, description="The alpha the verdict is read at (largest not "
                                        "destructive).")
    verdict_metric: str = Field("p(targets)", description="'p(targets)' or 'concept score' (generations).")
    site: str
    ref_norm: float = Field(description="The alphas' unit.")
    p_base: float = Field(description="p(targets) unsteered.")
    effects: list[Effect] = Field(default_factory=list)
    monotonic: bool
