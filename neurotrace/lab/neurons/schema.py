"""find_neurons request and result models, and the typed records of neurons_results.json (one per mode)."""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from neurotrace.lab.clamping import CollapseThresholds
from neurotrace.lab.errors import InputError
from neurotrace.lab.jobs import (
    BYTES,
    Dims,
    Estimate,
    dims_of,
    forward_bytes,
    positions,
    weight_bytes,
)
from neurotrace.lab.model.access.chat import CHAT_FIELD_HELP
from neurotrace.lab.model.access.neurons import parse_neuron
from neurotrace.lab.model.runtime.precision import Agreement, InsistPrecision, Precision, bytes_per_value
from neurotrace.lab.model.weights.lora import ModelName
from neurotrace.lab.results import RunResult

Mode = Literal["contrast", "collapse", "top_examples"]


class FindNeuronsRequest(BaseModel):
    """Rank MLP neurons (blocks.{L}.mlp.hook_post) for a question, or list one neuron's top examples."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "find_neurons"
    model: ModelName = Field(min_length=1, description="Embedded name, HuggingFace id or local directory.")
    mode: Mode = Field("contrast", description="'contrast': prompts vs control_prompts; 'collapse': collapsed vs "
                       "healthy greedy generations from prompts; 'top_examples': where `neuron` fires most.")
    prompts: list[str] = Field(min_length=1, description="Concept prompts, prompts to generate from, or the set "
                               "searched (by mode).")
    control_prompts: list[str] = Field(default_factory=list, description="Contrast mode: control prompts.")
    chat: bool = Field(False, description=CHAT_FIELD_HELP)
    neuron: str | None = Field(None, description="top_examples: 'layer:index', e.g. '5:12'.")
    layers: list[int] | None = Field(None, description="Layers searched (default all).")
    position: Literal["last", "mean"] = Field("last", description="Pool per prompt: scored (last) token or mean.")
    window: int = Field(4, ge=0, le=64, description="Collapse: generated tokens pooled with the last prompt token.")
    max_new_tokens: int = Field(32, ge=1, le=512, description="Collapse: greedy tokens per prompt.")
    n_permutations: int = Field(1000, ge=10, le=100_000, description="Label shuffles of the permutation test.")
    top_k: int = Field(10, ge=1, le=100, description="Rows returned inline (the CSV holds more).")
    seed: int = 0
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    precision: Precision = "float32"
    insist_precision: InsistPrecision = False

    @property
    def thresholds(self) -> CollapseThresholds:
        """Collapse rules: clamp_sweep's defaults, so both tools call the same outputs collapsed."""
        return CollapseThresholds()

    def shape_check(self, d: Dims) -> None:
        """Layers and the neuron against the model's shape (the run checks the same once it loads)."""
        if self.layers is not None:
            bad = [layer for layer in self.layers if not 0 <= layer < d.n_layers]
            if bad or not self.layers:
                raise InputError("layers", f"layers {bad or '[]'} are out of range ({d.n_layers} layers)",
                                 fix=f"use layers in 0..{d.n_layers - 1} or omit `layers`")
        if self.mode == "top_examples" and self.neuron:
            parse_neuron(self.neuron, d.n_layers, d.d_mlp, "neuron")

    def cost(self, lab: Any) -> Estimate:
        """A forward per prompt (per generated token in collapse mode) and the pooled MLP activations; in
        bfloat16 2-byte activations, the copy's weights and the float32 recheck's prompts
        (:func:`neurotrace.lab.neurons.precision.recheck_bound`)."""
        d = dims_of(lab, self.model)
        prompts = len(self.prompts) + len(self.control_prompts)
        generating = self.mode == "collapse"
        pos = positions(d, [*self.prompts, *self.control_prompts], self.max_new_tokens if generating else 0)
        layers = len(self.layers) if self.layers else d.n_layers
        rows = prompts * (self.max_new_tokens if generating else 1)
        pooled = prompts * layers * d.d_mlp * BYTES * 2
        fields = ("prompts", "control_prompts", "max_new_tokens", "layers")
        vb = bytes_per_value(self.precision)
        if vb == BYTES:
            return Estimate(rows, forward_bytes(d, 1, pos, pos) + pooled + layers * d.d_mlp * pos * BYTES, fields)
        from neurotrace.lab.neurons.precision import recheck_bound  # noqa: PLC0415 (stats import torch)

        again = recheck_bound(prompts, self.mode)
        return Estimate(rows + again * (self.max_new_tokens if generating else 1),
                        forward_bytes(d, 1, pos, pos) + pooled * 2 + layers * d.d_mlp * pos * BYTES
                        + weight_bytes(d, vb), (*fields, "precision"))


class NeuronScore(BaseModel):
    model_config = ConfigDict(extra="forbid")
    neuron: str = Field(description="'layer:index' as clamp_sweep takes it.")
    mean_a: float = Field(description="Mean activation, group A (concept / collapsed).")
    mean_b: float
    cohens_d: float
    p_value: float = Field(description="Permutation p, uncorrected.")
    p_bonferroni: float
    q_bh: float


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt_index: int
    pos: int
    token: str
    activation: float
    context: str


class NeuronRankingResults(BaseModel):
    """neurons_results.json of a contrast or collapse run: the ranking and its multiple-comparison counts."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["contrast", "collapse"]
    model: str
    groups: tuple[str, str] = Field(description="Names of group A and group B (concept/control, collapsed/healthy).")
    n_a: int = Field(description="Prompts in group A.")
    n_b: int = Field(description="Prompts in group B.")
    n_tested: int = Field(description="Neurons tested.")
    position: Literal["last", "mean"]
    n_permutations: int
    min_p: float = Field(description="About the smallest permutation p these group sizes can give.")
    top: list[NeuronScore] = Field(description="The 50 highest-ranked neurons (the CSV holds more).")
    n_bonferroni_05: int = Field(description="Neurons with Bonferroni p < 0.05.")
    n_bh_05: int = Field(description="Neurons with BH q < 0.05.")
    precision: Literal["float32", "bfloat16"] = Field("float32", description="The precision the run used.",
                                                      exclude_if=lambda v: v == "float32")
    precision_agreement: Agreement | None = Field(None, description="bfloat16: the float32 recheck of a sample of prompts.",
                                        exclude_if=lambda v: v is None)


class NeuronExamplesResults(BaseModel):
    """neurons_results.json of a top_examples run: one neuron's highest activations."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["top_examples"]
    model: str
    neuron: str = Field(description="'layer:index'.")
    n_positions: int = Field(description="Token positions searched.")
    mean: float = Field(description="Mean activation over every position.")
    max: float
    examples: list[Example] = Field(description="The 50 highest activations (the CSV holds more).")
    precision: Literal["float32", "bfloat16"] = Field("float32", description="The precision the run used.",
                                                      exclude_if=lambda v: v == "float32")
    precision_agreement: Agreement | None = Field(None, description="bfloat16: the float32 recheck of a sample of prompts.",
                                        exclude_if=lambda v: v is None)


NeuronsRecord = NeuronRankingResults | NeuronExamplesResults
NeuronsResults = Annotated[NeuronsRecord, Field(discriminator="mode")]
NEURONS_RESULTS = TypeAdapter(NeuronsResults)   # validates either mode's neurons_results.json


class FindNeuronsResult(RunResult):
    mode: Mode
    n_a: int = Field(description="Prompts in group A.")
    n_b: int = 0
    n_tested: int = Field(0, description="Neurons tested.")
    top: list[NeuronScore] = Field(default_factory=list)
    examples: list[Example] = Field(default_factory=list, description="top_examples mode.")
    table: str = Field("", description="URI of the ranked CSV.")
    precision: Literal["float32", "bfloat16"] = Field("float32", description="The precision the run used.")
    precision_agreement: Agreement | None = Field(None, description="bfloat16: agreement of a float32 recheck of the "
                                        "deciding prompts and a seeded sample.")
