"""intervene's boundary models: prompts, the request, feature effects, the result, and the typed record of
report.json."""

import math
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.capture import GenerationPlan
from neurotrace.lab.effects import Damage, SizeWord
from neurotrace.lab.intervention.policies import Policy
from neurotrace.lab.jobs import (
    BYTES,
    Estimate,
    dims_of,
    forward_bytes,
    positions,
    prompt_texts,
    weight_bytes,
)
from neurotrace.lab.model.access.chat import CHAT_FIELD_HELP, PromptInput
from neurotrace.lab.model.runtime.execution import Backend, Remote
from neurotrace.lab.model.runtime.precision import Agreement, InsistPrecision, Precision, bytes_per_value
from neurotrace.lab.model.runtime.sampling import SAMPLING_HELP, Greedy, Sampling
from neurotrace.lab.results import RunResult
from neurotrace.lab.sae import DictionaryRef


class PromptCase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt: PromptInput = Field(min_length=1, description="The input text (or chat messages).")
    target: str | None = Field(None, description="Expected next word(s); the effect is the change of log p(target) "
                               "(the sequence log-probability when it has several tokens).")
    foil: str | None = Field(None, description="A competing word; with it the effect is the change of "
                             "logit(target) - logit(foil) (the IOI convention).")


class InterveneRequest(BaseModel):
    """Apply intervention policies per generation step and compare against the baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "intervene"
    model: str | None = Field(None, description="The model; default: the model the SAE was fitted on.")
    fit_sae_run_id: str | None = Field(None, description="run_id of a fit_sae run (needed for feature policies "
                                       "and feature ranking; or give `dictionary`).")
    dictionary: DictionaryRef | None = None
    prompts: list[str | PromptCase] = Field(min_length=1, description="Prompts, as strings or {prompt, target, "
                                            "foil}.")
    chat: bool = Field(False, description=CHAT_FIELD_HELP)
    policies: list[Policy] = Field(default_factory=list, description="SAE edits ablate_features, clamp_features, "
                                   "patch_features and component edits zero, zero_heads, set_neurons, mean, patch, "
                                   "knockout; each with steps and positions. [] = a ranking-only pass.")
    max_new_tokens: int = Field(8, ge=0, le=256, description="Tokens generated per prompt (0 = one forward).")
    sampling: Sampling = Field(default_factory=Greedy, description=SAMPLING_HELP)
    controls: int = Field(3, ge=0, le=32, description="Controls per family (seeded): the edit on other heads, neurons "
                          "(same layer), features (matched mass) or positions, and same-norm random directions "
                          "(0 = no verdict).")
    rank_features: int = Field(16, ge=0, le=1024, description="SAE features ranked by causal effect per prompt "
                               "(0 = skip).")
    include_dense: bool = Field(False, description="Let rank_features draw dense features (firing on more than 10% "
                                "of tokens) too; default: non-dense candidates only.")
    seed: int = Field(0, description="Seeds sampling and the random control directions.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    precision: Precision = "float32"
    insist_precision: InsistPrecision = False
    backend: Backend = "hf"
    remote: Remote = False

    def cost(self, lab: Any) -> Estimate:
        """Greedy steps of every prompt under every policy, one forward per control (up to three structure-matched
        families and the random directions), the feature ranking, and the damage check on neutral text; in
        bfloat16 2-byte activations, the copy's weights, and the float32 recheck's prompts (the deciding one and
        10% more, each run whole)."""
        d = dims_of(lab, self.model)
        pos = positions(d, prompt_texts(self.prompts), self.max_new_tokens + (200 if self.chat else 0))
        per_prompt = (1 + len(self.policies)) * max(1, self.max_new_tokens) + 4 * self.controls + self.rank_features
        damage = 2 * (len(self.prompts) + 4) if self.policies else 0
        fields = ("prompts", "max_new_tokens", "controls", "rank_features", "policies")
        vb = bytes_per_value(self.precision)
        need = forward_bytes(d, 1, pos, pos, value_bytes=vb) * 2 + len(self.prompts) * pos * d.d_model * BYTES
        if vb == BYTES:
            return Estimate(len(self.prompts) * per_prompt + damage, need, fields)
        again = min(len(self.prompts), 1 + max(1, math.ceil(0.1 * len(self.prompts))))
        return Estimate((len(self.prompts) + again) * per_prompt + damage,
                        max(need, forward_bytes(d, 1, pos, pos) * 2) + weight_bytes(d, vb), (*fields, "precision"))


class FeatureEffect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feature: int
    effect: float = Field(description="Change in log p(target) in nats (or of the baseline's first token) when "
                          "ablated alone; mean over prompts in top_features.")
    activation: float = Field(description="Its largest activation on the prompt.")
    density: float | None = Field(None, description="Share of tokens it fires on (the dictionary's own statistics); "
                                  "null where unknown. Above 0.1 it is dense.")


Verdict = Literal["causal", "weak", "not above control", "no measurable effect", "destructive"]


class Outcome(BaseModel):
    """One generation of a prompt (baseline or intervened) and the next-token metrics at the prompt's end."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="The generated text.")
    tokens: list[int] = Field(description="The generated token ids.")
    top_token: str = Field(description="The most likely next token at the end of the prompt.")
    p_target: float | None = Field(None, description="p(target) at the end of the prompt (first "
                                   "token); null without a target.")
    logit_diff: float | None = Field(None, description="logit(target) - logit(foil) there (logits); null without "
                                     "both a target and a foil.")


class StepMetrics(BaseModel):
    """One generation step, teacher-forced on the baseline's tokens (a row of tables/per_step.csv)."""

    model_config = ConfigDict(extra="forbid")
    step: int = Field(ge=0, description="Generation step (0 = the prediction after the prompt).")
    baseline_token: str = Field(description="The baseline's token at this step.")
    kl: float = Field(description="KL(baseline || intervened) of the next-token distributions (nats).")
    p_token_baseline: float = Field(description="p(baseline token), unedited.")
    p_token_intervened: float = Field(description="p(baseline token) with the step's policies.")
    policies_active: list[int] = Field(description="Indices of the policies active at this step.")


class ControlEffects(BaseModel):
    """The policies' effect and their controls', at the policies' first active step, in the metric's units."""

    model_config = ConfigDict(extra="forbid")
    step: int = Field(ge=0, description="The generation step measured (the policies' first active one).")
    baseline: float = Field(0.0, description="The metric unedited (log p in nats, or a logit difference).")
    effect: float = Field(description="The policies' signed change of the metric.")
    controls: list[float] = Field(description="Each random same-norm direction's signed change of the metric.")
    families: dict[str, list[float]] = Field(default_factory=dict, description="Structure-matched control family "
                                             "-> each control's signed change of the metric.")


class ControlFamily(BaseModel):
    """The distribution of one control family's effects: each control's signed change, mean over prompts."""

    model_config = ConfigDict(extra="forbid")
    family: str = Field(description="e.g. 'same-layer heads', 'random directions'.")
    mean: float = Field(description="Mean signed change over the family's controls (metric units).")
    min: float = Field(description="The most negative control's change.")
    max: float = Field(description="The most positive control's change.")
    n: int = Field(ge=0, description="Controls in the family.")


class PromptReport(BaseModel):
    """One prompt of report.json: both generations, per-step metrics, controls and ranked features."""

    model_config = ConfigDict(extra="forbid")
    prompt: str
    target: str | None = None
    foil: str | None = None
    baseline: Outcome
    intervened: Outcome = Field(description="With the policies (equal to the baseline without policies).")
    per_step: list[StepMetrics]
    diverged_at: int | None = Field(description="First generated token where the texts differ; null if none.")
    generation: GenerationPlan
    controls: ControlEffects | None = Field(None, description="Null without policies or with controls=0.")
    top_features: list[FeatureEffect] | None = Field(None, description="Ranked by |effect| on this prompt; "
                                                     "null without an SAE or with rank_features=0.")


class InterveneReport(BaseModel):
    """report.json: everything an intervene run measured (no timestamps or run ids of its own, so the same
    request with the same seed on the same machine writes it byte for byte)."""

    model_config = ConfigDict(extra="forbid")
    tool: Literal["intervene"] = "intervene"
    seed: int
    model: str
    model_fingerprint: str = Field(description="Weights fingerprint of the model.")
    fit_sae_run_id: str | None
    dictionary: str | None = Field(None, description="The dictionary reference used, when not a fit_sae run id.")
    sae_site: str | None = Field(description="The SAE's site; null without an SAE.")
    inputs: list[str] = Field(description="Runs read: the fit_sae run, then its capture run.")
    policies: list[Policy]
    max_new_tokens: int
    sampling: Sampling
    verdict: Verdict | None = Field(description="By verdict_rules; null without policies or controls.")
    metric: str = Field("", description="What the effect is a change of, e.g. \"logit('Mary') - logit('John')\".")
    effect: float | None = Field(description="Mean over prompts of the policies' signed change of the metric.")
    effect_fraction: float | None = Field(None, description="The same as a signed fraction of the task's scale.")
    effect_size: SizeWord | None = Field(None, description="The fraction in words (size_rules).")
    direction: str | None = Field(None, description="'raises' or 'lowers' the metric.")
    control_family: str | None = Field(None, description="The control family the verdict compared with.")
    control_effect: float | None = Field(description="Its controls' mean change in the edit's direction (metric "
                                         "units; a control moving the other way counts 0).")
    control_effect_max: float | None = Field(None, description="Its largest change in the edit's direction.")
    controls: list[ControlFamily] = Field(default_factory=list, description="Every control family's distribution.")
    damage: Damage | None = Field(None, description="The edit on neutral text and generations; null without "
                                  "policies.")
    n_top1_changed: int = Field(0, ge=0, description="Prompts whose top-1 next token changed.")
    verdict_rules: str
    size_rules: str = ""
    sae_caution: str | None = Field(None, description="Why the SAE's features may not be meaningful: fit_sae's "
                                    "verdict when it was not usable; null for a usable SAE or without one.")
    density_source: str | None = Field(None, description="Where the features' densities come from; null without "
                                       "an SAE or where the dictionary has none (dense features then not left out).")
    dense_edited: list[int] = Field(default_factory=list, description="Edited features that are dense (fire on more "
                                    "than 10% of tokens).")
    prompts: list[PromptReport]
    top_features: list[FeatureEffect] = Field(description="Mean effect over prompts (nats of log p(target)), "
                                              "sorted by |effect|.")
    mean_p_target_change: float | None = Field(description="Mean intervened - baseline p(target); null without "
                                               "targets or policies.")
    n_text_changed: int = Field(ge=0, description="Prompts whose generated text changed (0 when max_new_tokens=0: "
                                "see n_top1_changed).")
    generation: GenerationPlan = Field(description="Over all prompts: recompute if any prompt recomputed.")
    # float32 reports keep the keys they always had; a bfloat16 one adds these two
    precision: Literal["float32", "bfloat16"] = Field("float32", description="The precision the run used.",
                                                      exclude_if=lambda v: v == "float32")
    precision_agreement: Agreement | None = Field(None, description="bfloat16: the float32 recheck of a sample of prompts.",
                                        exclude_if=lambda v: v is None)


class InterveneResult(RunResult):
    n_prompts: int
    mean_p_target_change: float | None = Field(None, description="Mean intervened - baseline p(target).")
    n_text_changed: int = Field(description="Prompts whose generated text changed.")
    top_features: list[FeatureEffect] = Field(default_factory=list, description="Features sorted by |effect| "
                                              "(nats of log p(target), mean over prompts).")
    metric: str = Field("", description="What the effect is a change of (log p(target), or logit(target) - "
                        "logit(foil) with a foil).")
    effect: float | None = Field(None, description="Mean over prompts of the policies' signed change of the metric "
                                 "at their first active step.")
    effect_fraction: float | None = Field(None, description="The same as a signed fraction of the task's scale.")
    effect_size: SizeWord | None = Field(None, description="negligible / measurable but small / moderate / large.")
    direction: str | None = Field(None, description="'raises' or 'lowers' the metric.")
    control_family: str | None = Field(None, description="The control family the verdict compared with.")
    control_effect: float | None = Field(None, description="That family's mean change in the edit's direction "
                                         "(a control moving the other way counts 0).")
    control_effect_max: float | None = Field(None, description="Its largest change in the edit's direction.")
    controls: list[ControlFamily] = Field(default_factory=list, description="Every control family: signed mean, "
                                          "min, max, n.")
    damage: Damage | None = Field(None, description="KL and loss change on neutral text, collapsed generations; "
                                  "destructive above the bars in the summary.")
    n_top1_changed: int = Field(0, description="Prompts whose top-1 next token changed.")
    verdict_rules: str = Field("", description="The verdict's and the destructive check's thresholds.")
    density_source: str | None = Field(None, description="Where the features' densities come from (null: unknown).")
    dense_edited: list[int] = Field(default_factory=list, description="Edited features that are dense (fire on more "
                                    "than 10% of tokens).")
    sae_caution: str | None = Field(None, description="fit_sae's verdict when it was not usable (its features may "
                                    "not be meaningful); null otherwise.")
    verdict: Verdict | None = Field(None, description="By the thresholds in the summary; null without policies or "
                                   "controls.")
    precision: Literal["float32", "bfloat16"] = Field("float32", description="The precision the run used.")
    precision_agreement: Agreement | None = Field(None, description="bfloat16: agreement of a float32 recheck of the "
                                        "deciding prompt and a seeded sample.")
    report: str = Field("", description="URI of report.json.")
