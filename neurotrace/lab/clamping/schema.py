"""clamp_sweep's boundary models: the request, its sampling choices, and the result."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.clamping.collapse import CollapseThresholds
from neurotrace.lab.clamping.prompt_grid import PromptItem
from neurotrace.lab.results import RunResult


class Greedy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["greedy"] = "greedy"


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["sample"] = "sample"
    temperature: float = Field(1.0, gt=0, description="Softmax temperature (1.0 = the model's distribution).")
    top_k: int | None = Field(50, ge=1, description="Sample only among the k most likely tokens; None = all.")


Sampling = Annotated[Greedy | Sample, Field(discriminator="kind")]


class ClampSweepRequest(BaseModel):
    """Clamp MLP neurons to each value of a sweep during generation; detect and rescue collapses."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1, description="Causal LM: embedded name (e.g. 'fact-gpt2'), HuggingFace id "
                       "(e.g. 'gpt2') or local model directory.")
    neurons: list[str] = Field(min_length=1, description="Neurons as 'layer:index' of blocks.{layer}.mlp.hook_post "
                               "(MLP hidden unit, 0 <= index < d_mlp), e.g. ['11:373']; '*:373' = index 373 in "
                               "every layer.")
    neuron_mode: Literal["joint", "separate"] = Field("joint", description="'joint': all listed neurons are "
                                                      "clamped together to each value; 'separate': one sweep per "
                                                      "entry of `neurons` (a '*:i' entry stays one group).")
    values: list[float | None] | None = Field(None, description="Clamp values; null = baseline (no clamp), "
                                              "always included. Default: the BCR paper's sweep -100, -50, -25, "
                                              "-10, -5, -3, 0, null, 3, 5, 10, 25, 50, 100.")
    position: Literal["all", "last"] = Field("all", description="'all': clamp every token position (prompt and "
                                             "generated); 'last': only the newest position at each step (the "
                                             "prompt's final token, then each generated token).")
    prompts: list[str | PromptItem] = Field(default_factory=list, description="Prompts, as strings or {prompt, "
                                            "core_id, type, level} objects.")
    prompt_file: str | None = Field(None, description="A prompt-grid file: .jsonl of {prompt, core_id, type, "
                                    "level} objects, or .csv/.tsv with a header holding a 'prompt' column and "
                                    "optional core_id, type, level columns. Added after `prompts`. Read only from the server's "
                                    "input directories (default: the runs dir and inputs/ beside it); prefer inline "
                                    "`prompts`.")
    max_new_tokens: int = Field(50, ge=1, le=2048, description="Tokens generated per (prompt, value) (paper: 50).")
    sampling: Sampling = Field(default_factory=Greedy, description="{'kind': 'greedy'} (default) or "
                               "{'kind': 'sample', 'temperature': 1.0, 'top_k': 50} (seeded by `seed`).")
    seed: int = Field(0, description="Seed of the sampling generator (unused for greedy).")
    stop_at_eos: bool = Field(True, description="Stop a row at the end-of-text token, as model.generate does.")
    thresholds: CollapseThresholds = Field(default_factory=CollapseThresholds,
                                           description="Rules that flag an output as collapsed.")
    batch_size: int = Field(128, ge=1, le=4096, description="(prompt, value) rows generated together; lower it "
                            "if memory is short.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"


class ValueSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    neurons: str = Field(description="The clamped neuron group ('none' for the baseline).")
    value: float | None = Field(description="Clamp value; null = baseline.")
    n: int = Field(description="Rows (prompts) at this value.")
    n_collapsed: int
    collapse_rate: float
    n_improved: int = Field(description="Collapsed baselines whose output here is not collapsed.")
    improvement_rate: float | None = Field(description="n_improved / collapsed baselines (null if none).")
    n_induced: int = Field(description="Healthy baselines whose output here collapsed.")
    mean_distinct_2: float
    mean_loop_frac: float
    mean_norm_entropy: float
    mean_compression_ratio: float


class ClampSweepResult(RunResult):
    n_prompts: int
    n_rows: int = Field(description="(prompt, value) generations.")
    n_collapsed_baselines: int = Field(description="Prompts whose unclamped output collapsed.")
    n_recovered: int = Field(description="Collapsed baselines recovered by at least one clamp value.")
    best: list[ValueSummary] = Field(default_factory=list, description="Up to 3 (neurons, value) pairs that "
                                     "recover the most collapsed baselines (ties: fewer induced collapses).")
    per_value: list[ValueSummary] = Field(default_factory=list, description="Every (neurons, value) summary.")
    tokens_generated: int = 0
    seconds: float = 0.0
    report: str = Field("", description="URI of the Markdown report.")
    table: str = Field("", description="URI of the consolidated CSV table.")
    plot: str = Field("", description="URI of the improvement-rate curve.")
