"""clamp_sweep's boundary models: the request and the result (sampling is the shared union of
:mod:`neurotrace.lab.model.runtime.sampling`), and the typed record of clamp_results.json."""

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.clamping.prompt_grid import PromptItem
from neurotrace.lab.effects import CollapseThresholds, CollapseType, Damage
from neurotrace.lab.jobs import Dims, Estimate
from neurotrace.lab.model.access.neurons import NEURON_HELP, parse_neuron
from neurotrace.lab.model.runtime.execution import Backend, Remote
from neurotrace.lab.model.runtime.precision import Agreement, InsistPrecision, Precision
from neurotrace.lab.model.runtime.sampling import SAMPLING_HELP, Greedy, Sampling
from neurotrace.lab.results import RunResult

Verdict = Literal["specific", "not above control", "harmful", "no collapsed baselines", "destructive"]
# The verdict's thresholds (stated in every report): see neurotrace.lab.clamping.verdict.


class ClampSweepRequest(BaseModel):
    """Clamp MLP neurons to each value of a sweep during generation; detect and rescue collapses."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "clamp_sweep"
    model: str = Field(min_length=1, description="Causal LM: embedded name (e.g. 'fact-gpt2'), HuggingFace id "
                       "(e.g. 'gpt2') or local model directory.")
    neurons: list[str] = Field(min_length=1, description=NEURON_HELP)
    neuron_mode: Literal["joint", "separate"] = Field("joint", description="Joint or separate sweeps. 'joint': all "
                                                      "listed neurons are clamped together to each value; 'separate': one sweep per "
                                                      "entry of `neurons` (a '*:i' entry stays one group).")
    values: list[float | None] | None = Field(None, description="Clamp values; null = baseline (no clamp), "
                                              "always included. Default: the BCR paper's sweep -100, -50, -25, "
                                              "-10, -5, -3, 0, null, 3, 5, 10, 25, 50, 100.")
    position: Literal["all", "last"] = Field("all", description="Where to clamp. 'all': every token position "
                                             "(prompt and generated); 'last': only the newest position at each step (the "
                                             "prompt's final token, then each generated token).")
    prompts: list[str | PromptItem] = Field(default_factory=list, description="Prompts, as strings or {prompt, "
                                            "core_id, type, level} objects.")
    prompt_file: str | None = Field(None, description="A prompt-grid file. A .jsonl of {prompt, core_id, "
                                    "type, level} objects, or .csv/.tsv with a header holding a 'prompt' column and "
                                    "optional core_id, type, level columns. Added after `prompts`. Read only from the server's "
                                    "input directories (default: the runs dir and inputs/ beside it); prefer inline "
                                    "`prompts`.")
    max_new_tokens: int = Field(50, ge=1, le=2048, description="Tokens generated per (prompt, value) (paper: 50).")
    sampling: Sampling = Field(default_factory=Greedy, description=SAMPLING_HELP)
    seed: int = Field(0, description="Seed of the sampling generator and of the control neurons' draw.")
    controls: int = Field(3, ge=0, le=16, description="Random-neuron controls per group. Each draws "
                          "the same number of other neurons in the same layers (seeded by `seed`) and is swept "
                          "over the same values; the verdict compares the group's recoveries with theirs "
                          "(0 = no controls, no verdict).")
    chat_template: bool = Field(False, description="Use the chat template. Wraps each prompt as a user "
                                "turn (add_generation_prompt) - for instruct models, which otherwise "
                                "often end at once (empty outputs).")
    prepend_bos: bool | None = Field(None, description="Start every prompt with the BOS token (exactly once). "
                                     "null = as TransformerLens does for the family: yes for GPT-2, Llama, "
                                     "Mistral, Gemma, OPT; no for GPT-NeoX/Pythia, Qwen, Phi and others that "
                                     "TransformerLens marks default_prepend_bos=False (BCR's TransformerLens "
                                     "scripts ran GPT-2 with BOS). Ignored with chat_template.")
    stop_at_eos: bool = Field(True, description="Stop a row at end-of-text. As model.generate does.")
    thresholds: CollapseThresholds = Field(default_factory=CollapseThresholds,
                                           description="Rules that flag an output as collapsed.")
    batch_size: int = Field(128, ge=1, le=4096, description="(prompt, value) rows generated together; lower it "
                            "if memory is short.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    precision: Precision = "float32"
    insist_precision: InsistPrecision = False
    backend: Backend = "hf"
    remote: Remote = False

    def shape_check(self, d: Dims) -> None:
        """Every neuron reference against the model's shape (the run checks the same once it loads)."""
        for ref in self.neurons:
            parse_neuron(ref, d.n_layers, d.d_mlp)

    def cost(self, lab: Any) -> Estimate:
        """The whole grid's forward rows and peak bytes (:mod:`neurotrace.lab.clamping.cost`)."""
        from neurotrace.lab.clamping.cost import clamp_sweep_estimate  # noqa: PLC0415 (cost reads the grid file)

        return clamp_sweep_estimate(self, lab)


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
    n_empty: int = Field(0, description="Collapsed outputs here that are empty (no tokens before end-of-text).")
    n_loop: int = Field(0, description="Collapsed outputs here that are loops.")
    n_repetitive: int = Field(0, description="Other collapsed outputs (low distinct-2/entropy, no long loop).")
    control_of: str | None = Field(None, description="For a random-neuron control: the group it controls.")
    mean_distinct_2: float
    mean_loop_frac: float
    mean_norm_entropy: float
    mean_compression_ratio: float


class GroupVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    neurons: str = Field(description="The clamped neuron group.")
    best_value: float | None = Field(description="Its value recovering the most collapsed baselines (null if none).")
    n_recovered: int = Field(description="Collapsed baselines recovered at best_value.")
    n_induced: int = Field(description="Healthy baselines collapsed at best_value.")
    control_recovered: list[int] = Field(default_factory=list, description="Each control's most recoveries at "
                                         "any value (the same best-of-sweep selection as the group).")
    recovery_above_control: float | None = Field(None, description="(n_recovered - mean control_recovered) / "
                                                 "collapsed baselines; null without controls or baselines.")
    verdict: Verdict | None = Field(None, description="null when controls=0.")
    reason: str = Field("", description="The rule that decided the verdict, with its numbers.")
    damage: Damage | None = Field(None, description="The group clamped to best_value at every position of neutral "
                                  "text (the prompts' prefixes, plain sentences): KL, loss change, top-1 changes; "
                                  "a destructive clamp reads `destructive`. Null without a best value.")


class RecoveredOutput(BaseModel):
    """One clamp setting of the requested neurons whose output is not collapsed where the baseline was."""

    model_config = ConfigDict(extra="forbid")
    neurons: str = Field(description="The clamped neuron group.")
    value: float | None = Field(description="Its clamp value (activation units of mlp.hook_post).")
    output: str = Field(description="The generated text (prompt excluded).")
    distinct_2: float = Field(description="Distinct token bigrams / bigrams of the output, 0..1.")
    loop_frac: float = Field(description="Fraction of the output's tokens covered by its longest loop, 0..1.")


class CollapsedCase(BaseModel):
    """A prompt whose unclamped (baseline) output collapsed, with the clamped outputs that recovered it."""

    model_config = ConfigDict(extra="forbid")
    core_id: str = Field(description="The prompt's core id (default 'p<row>').")
    type: str = Field(description="The prompt's type tag ('' if none).")
    level: str = Field(description="The prompt's level tag ('' if none).")
    prompt: str
    baseline: str = Field(description="The baseline's generated text.")
    reasons: list[str] = Field(description="The collapse rules that fired on the baseline, with their numbers.")
    collapse_type: CollapseType | None = Field(description="empty, loop or repetitive.")
    recovered_by: list[RecoveredOutput] = Field(description="Settings of the requested neurons that recover it, "
                                                "in sweep order.")
    recovered_by_controls: int = Field(description="Random-neuron control settings that recover it.")


class ClampResults(BaseModel):
    """clamp_results.json: what was swept, the per-value summaries (controls apart), the verdicts and every
    collapsed baseline; the input of :mod:`neurotrace.lab.clamping.figures` and of the ``plot`` tool."""

    model_config = ConfigDict(extra="forbid")
    model: str
    neurons: list[str] = Field(description="The requested neuron refs, as given.")
    neuron_mode: Literal["joint", "separate"]
    position: Literal["all", "last"]
    max_new_tokens: int = Field(description="Tokens generated per (prompt, setting), at most.")
    thresholds: CollapseThresholds
    n_prompts: int
    n_rows: int = Field(description="(prompt, setting) generations, controls included.")
    n_settings: int = Field(description="Sweep settings: the baseline, each group's values and the controls'.")
    n_collapsed_baselines: int = Field(description="Prompts whose unclamped output collapsed.")
    n_recovered: int = Field(description="Collapsed baselines recovered by at least one value of the requested "
                             "neurons.")
    baseline_collapse_types: dict[CollapseType, int] = Field(description="Collapsed baselines by type.")
    controls: int = Field(description="Random-neuron controls per group.")
    groups: list[GroupVerdict]
    notes: list[str] = Field(description="Caveats: identical 'all'/'last' clamps, BOS and chat-template use.")
    per_value: list[ValueSummary] = Field(description="Per (neurons, value) of the requested groups; the "
                                          "baseline is the row with value null.")
    controls_per_value: list[ValueSummary] = Field(description="The same for the random-neuron controls "
                                                   "(control_of names their group).")
    collapsed: list[CollapsedCase] = Field(description="Every collapsed baseline, in prompt order.")
    tokens_generated: int = Field(description="Tokens generated over the whole sweep.")
    seconds: float = Field(description="Wall-clock seconds of the sweep.")
    # a float32 run's record keeps the keys float32 records always had; a bfloat16 one adds these two
    precision: Literal["float32", "bfloat16"] = Field("float32", description="The precision the sweep ran in.",
                                                      exclude_if=lambda v: v == "float32")
    precision_agreement: Agreement | None = Field(None, description="bfloat16: the float32 recheck of a sample of rows.",
                                        exclude_if=lambda v: v is None)


class ClampSweepResult(RunResult):
    n_prompts: int
    n_rows: int = Field(description="(prompt, value) generations.")
    n_collapsed_baselines: int = Field(description="Prompts whose unclamped output collapsed.")
    n_recovered: int = Field(description="Collapsed baselines recovered by at least one clamp value.")
    baseline_collapse_types: dict[str, int] = Field(default_factory=dict, description="Collapsed baselines "
                                                    "by type: empty, loop, repetitive.")
    verdict: Verdict | None = Field(None, description="The first group's verdict against its random-neuron "
                                    "controls (null when controls=0); see `groups` for each group.")
    groups: list[GroupVerdict] = Field(default_factory=list, description="Per neuron group: best value, "
                                       "recoveries vs controls, verdict.")
    best: list[ValueSummary] = Field(default_factory=list, description="Up to 3 (neurons, value) pairs that "
                                     "recover the most collapsed baselines (ties: fewer induced collapses).")
    per_value: list[ValueSummary] = Field(default_factory=list, description="Every (neurons, value) summary of "
                                          "the requested groups (controls: tables/sweep_summary.csv).")
    notes: list[str] = Field(default_factory=list, description="Caveats: identical 'all'/'last' clamps, BOS and "
                             "chat-template use.")
    tokens_generated: int = 0
    seconds: float = 0.0
    precision: Literal["float32", "bfloat16"] = Field("float32", description="The precision the sweep ran in.")
    precision_agreement: Agreement | None = Field(None, description="bfloat16: agreement of a float32 recheck of the "
                                        "deciding rows and a seeded sample.")
    report: str = Field("", description="URI of the Markdown report.")
    table: str = Field("", description="URI of the consolidated CSV table.")
    plot: str = Field("", description="URI of the improvement-rate curve.")
