"""probe request and result models, and the typed record of probe_results.json."""

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.errors import InputError
from neurotrace.lab.jobs import BYTES, Dims, Estimate, dims_of, forward_bytes, positions
from neurotrace.lab.model.access.chat import CHAT_FIELD_HELP
from neurotrace.lab.model.weights.lora import ModelName
from neurotrace.lab.results import RunResult


class ProbeRequest(BaseModel):
    """Fit cross-validated linear probes for a two-label prompt set on the residual stream of every layer."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "probe"
    model: ModelName = Field(min_length=1, description="Embedded name, HuggingFace id or local directory.")
    prompts: list[str] = Field(min_length=4, description="Labelled prompts.")
    chat: bool = Field(False, description=CHAT_FIELD_HELP)
    labels: list[str] = Field(min_length=4, description="One label per prompt; exactly two distinct values.")
    positive: str | None = Field(None, description="Label the saved direction points toward (default: the second "
                                 "distinct label).")
    method: Literal["logistic", "ridge"] = Field("logistic", description="L2 logistic regression or ridge on +-1.")
    layers: list[int] | None = Field(None, description="Residual layers L (blocks.L.hook_resid_pre; L = n_layers "
                                     "is the final residual). Default all.")
    position: Literal["last", "mean"] = Field("last", description="Scored (last) token or mean over tokens.")
    k_folds: int = Field(5, ge=2, le=20, description="Stratified cross-validation folds.")
    l2: float = Field(1e-2, ge=0, description="L2 penalty (on standardised features).")
    n_shuffles: int = Field(3, ge=1, le=50, description="Shuffled-label refits averaged for the baseline.")
    seed: int = 0
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")

    def shape_check(self, d: Dims) -> None:
        """Layers against the model's depth (0..n_layers: the residual after the last block included)."""
        if self.layers is not None:
            bad = [layer for layer in self.layers if not 0 <= layer <= d.n_layers]
            if bad or not self.layers:
                raise InputError("layers", f"layers {bad or '[]'} are out of range", fix=f"use layers in 0..{d.n_layers}")

    def cost(self, lab: Any) -> Estimate:
        """A forward per prompt, every layer's pooled states, and the folds' least-squares fits."""
        d = dims_of(lab, self.model)
        pos = positions(d, self.prompts)
        layers = len(self.layers) if self.layers else d.n_layers + 1
        states = len(self.prompts) * layers * d.d_model * BYTES
        fits = self.k_folds * (1 + self.n_shuffles) * d.d_model * d.d_model * BYTES
        return Estimate(len(self.prompts), forward_bytes(d, 1, pos) + states + fits, ("prompts", "layers", "k_folds"))


class LayerAccuracy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layer: int
    site: str
    accuracy: float = Field(description="Mean held-out accuracy over folds.")
    accuracy_std: float
    shuffled: float = Field(description="The same, shuffled labels.")


class ProbeResults(BaseModel):
    """probe_results.json: held-out accuracy per layer (steer reads the sites back; the directions are in
    directions.safetensors)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    method: Literal["logistic", "ridge"]
    position: Literal["last", "mean"]
    classes: tuple[str, str] = Field(description="(negative, positive); the directions point toward positive.")
    n_prompts: int
    k_folds: int = Field(description="Cross-validation folds used (fewer than asked when a class is small).")
    chance: float = Field(description="Majority-class accuracy.")
    best_layer: int
    per_layer: list[LayerAccuracy]


class ProbeResult(RunResult):
    classes: list[str] = Field(description="[negative, positive].")
    chance: float
    best_layer: int
    best_accuracy: float
    p_value: float = Field(1.0, description="One-sided binomial p of the best layer's held-out accuracy vs chance, "
                                            "Bonferroni-corrected over the layers probed (< 0.05: significant).")
    per_layer: list[LayerAccuracy] = Field(default_factory=list)
    directions: str = Field("", description="URI of directions.safetensors.")
