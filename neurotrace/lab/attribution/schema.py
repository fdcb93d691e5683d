"""attribute request and result: which components, heads and neurons write the answer's logit."""

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.jobs import BYTES, Estimate, dims_of, forward_bytes, positions
from neurotrace.lab.model.access.chat import CHAT_FIELD_HELP, PromptInput
from neurotrace.lab.model.weights.lora import ModelName
from neurotrace.lab.results import RunResult

RESULTS_FILE = "attribute_results.json"
CONVENTION = ("final-norm scale frozen from the clean run (TransformerLens apply_ln_to_stack; LayerNorm "
              "centring kept), shares sum exactly to the metric with the norm and unembedding biases as 'bias'")


class AttributeRequest(BaseModel):
    """Direct logit attribution of the answer at the last position, optionally with attribution patching."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "attribute"
    model: ModelName = Field(min_length=1, description="Embedded name (e.g. 'fact-gpt2'), HuggingFace id or local dir "
                       "(causal LMs).")
    prompt: PromptInput = Field(min_length=1, description="The prompt (or chat messages); its last token is the scored position.")
    chat: bool = Field(False, description=CHAT_FIELD_HELP)
    target: str | None = Field(None, description="Answer word (first token after a space); default: the "
                               "model's top-1 prediction.")
    contrast: str | None = Field(None, description="A second word: attribute the logit difference target - "
                                 "contrast. Default: the centred target logit (logit minus the mean logit).")
    top_k: int = Field(10, ge=1, le=50, description="Heads and neurons listed, by absolute share.")
    corrupt_prompt: str | None = Field(None, description="Also run attribution patching (gradient x activation "
                                       "difference, corrupt -> clean) over heads and neurons; same token length.")
    check_top: int = Field(5, ge=0, le=20, description="Exactly patch this many top heads and neurons to check "
                           "the attribution-patching estimates.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")

    def cost(self, lab: Any) -> Estimate:
        """The cached forward(s) and backward, plus the checked top components' patched runs."""
        d = dims_of(lab, self.model)
        pos = positions(d, [self.prompt, self.corrupt_prompt or ""])
        cache = d.n_layers * pos * (3 * d.d_model + d.d_mlp) * BYTES * (3 if self.corrupt_prompt else 1)
        rows = 1 + (2 + 2 * self.check_top if self.corrupt_prompt else 0)
        return Estimate(rows, forward_bytes(d, 1, pos, pos) * 2 + cache, ("prompt", "corrupt_prompt"))


class Share(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="'embed', 'pos_embed', 'L3.attn', 'L3.mlp', 'L3H1' (head), 'L3N120' (neuron, "
                      "the '3:120' ref of clamp_sweep / intervene), 'bias'.")
    value: float = Field(description="Share of the metric, in logit units.")


class PatchEstimate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    estimate: float = Field(description="Attribution-patching estimate of the metric change, corrupt -> clean.")
    exact: float | None = Field(None, description="Exactly patched metric change (for the top check_top).")


class AttributionPatching(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric_clean: float
    metric_corrupt: float
    heads: list[PatchEstimate]
    neurons: list[PatchEstimate]


class AttributeResults(BaseModel):
    """attribute_results.json: the shares of the metric by component, head and top neuron (every neuron's share
    is in arrays/neurons.npy)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    prompt: str
    target: str = Field(description="The target token as text.")
    contrast: str | None = Field(None, description="The contrast token as text (logit_diff only).")
    metric: Literal["logit_diff", "centred_logit"]
    metric_value: float = Field(description="The model's own metric at the scored position, logits.")
    convention: str = Field(description="How the final norm is handled.")
    components: list[Share] = Field(description="Embedding, each layer's attention and MLP output, bias (sum = metric).")
    heads: list[list[float]] = Field(description="(layer, head) direct share, logits.")
    head_bias: list[float] = Field(description="Per layer: the attention output-projection bias's share, logits.")
    top_neurons: list[Share]
    patching: AttributionPatching | None = None


class AttributeResult(RunResult):
    model: str
    target: str = Field(description="The target token as text.")
    contrast: str | None = None
    metric: str = Field(description="'logit_diff' or 'centred_logit'.")
    metric_value: float = Field(description="The model's own metric at the scored position.")
    convention: str = Field(description="How the final norm is handled.")
    components: list[Share] = Field(description="Embedding, each layer's attention and MLP output, bias (sum = metric).")
    top_heads: list[Share]
    top_neurons: list[Share]
    patching: AttributionPatching | None = None
