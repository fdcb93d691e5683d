"""fit_sae's boundary models: the request and the result, and the typed record of sae_metrics.json."""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.effects import Damage
from neurotrace.lab.jobs import BYTES, WIDTH_GUESS, Estimate
from neurotrace.lab.results import RunResult

DictionaryRef = Annotated[str, Field(min_length=1, max_length=4096, description=(
    "A dictionary (SAE or transcoder): a fit_sae run_id, a local folder in SAELens' layout (cfg.json + "
    "sae_weights.safetensors, or Gemma Scope 2's params.safetensors; under the input directories), or a "
    "SAELens release and id ('release/sae_id', downloaded when online). Weights only from safetensors."))]


class FitSAERequest(BaseModel):
    """Fit an SAE on one site of a capture run."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "fit_sae"
    capture_run_id: str = Field(min_length=1, description="run_id of a complete capture run.")
    site: str | None = Field(None, description="Which captured site; may be omitted if the run captured one.")
    architecture: Literal["relu", "topk", "batchtopk", "jumprelu"] = Field(
        "topk", description="Architecture. SAELens' 'topk': k active features per row (AuxK for dead ones); "
        "'batchtopk': k per row on average over a batch (a JumpReLU at inference); 'jumprelu': learned "
        "thresholds, L0 penalty l0_coefficient; 'relu': L1 penalty l1_coefficient.")
    out_site: str | None = Field(None, description="Transcoder output site. From `site` (e.g. "
                                 "'blocks.6.ln2.hook_normalized') to this captured site of the same run (e.g. "
                                 "'blocks.6.hook_mlp_out'); null = an SAE.")
    skip: bool = Field(False, description="Transcoder skip. A linear skip connection W_skip, zero-initialised.")
    expansion_factor: int = Field(4, ge=1, le=256, description="d_sae = expansion_factor * d_in unless d_sae "
                                  "is given.")
    d_sae: int | None = Field(None, ge=1, description="Number of features (overrides expansion_factor).")
    k: int = Field(8, ge=1, description="Active features per row (topk).")
    l0_coefficient: float = Field(1.0, ge=0, description="L0 weight. For jumprelu, ramped up over the first 5% "
                                  "of steps.")
    l1_coefficient: float = Field(5.0, ge=0, description="L1 weight. On decoder-norm-weighted activations (relu; "
                                  "ramped up over the first 5% of steps). 5 suits normalised inputs (L0 ~40 on a "
                                  "SmolLM2 residual; 1 was dense).")
    normalize: Literal["expected_norm", "none"] = Field("expected_norm", description="Input scaling. 'expected_norm' (SAELens' "
                                                        "expected_average_only_in): scale inputs so training rows "
                                                        "have mean norm sqrt(d_in); the factor is saved and "
                                                        "decoding restores model units. 'none': raw states.")
    exclude_special: bool = Field(True, description="Skip special rows. Leave rows at position 0 and at special tokens (BOS, EOS, "
                                  "pad), and rows whose norm exceeds 10x the median row norm (massive activations), out of "
                                  "training, metrics and splicing (SAELens exclude_special_tokens; position 0 and a "
                                  "few first tokens often have ~100x the norm of the rest).")
    heldout_fraction: float = Field(0.1, ge=0, lt=1, description="Held-out share. Share of the captured steps (seeded) held "
                                    "out: reconstruction metrics and splicing use them (0 = evaluate on the "
                                    "training rows).")
    aux_k: int | None = Field(None, ge=1, description="AuxK latents. AuxK (topk): dead features reconstructing the residual "
                              "per row; null = d_in / 2 (Gao et al. 2024).")
    aux_coefficient: float = Field(1 / 32, ge=0, description="AuxK weight. Weight of the AuxK loss (topk; Gao et al.'s 1/32; "
                                   "0 = off).")
    dead_feature_window: int | None = Field(None, ge=1, description="Dead after. Steps without firing after which a "
                                            "feature is dead (SAELens' dead_feature_window); null = min(1000, "
                                            "max(10, n_steps // 10)).")
    resample_dead: bool = Field(True, description="Resample dead features. Every dead_feature_window steps (first 80% of training), "
                                "re-initialise dead features on high-error rows (Anthropic's resampling).")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    lr_warm_up_steps: int = Field(0, ge=0, description="LR warm-up steps. Linear from 0, as SAELens'.")
    lr_decay_steps: int = Field(0, ge=0, description="LR decay steps. Linear to 0 at the end, as SAELens'.")
    b_dec_init: Literal["mean", "geometric_median", "zeros"] = Field("mean", description="Initial b_dec. The "
                                                                       "training rows' mean, geometric median, "
                                                                       "or 0.")
    batch_size: int = Field(256, ge=1, description="Rows per optimizer step.")
    n_steps: int = Field(2000, ge=1, le=10_000_000, description="Optimizer steps.")
    seed: int = Field(0, description="Seeds the weight init and the batch order.")
    n_examples: int = Field(10, ge=1, le=100, description="Top rows per feature.")
    context_tokens: int = Field(8, ge=0, le=64, description="Context tokens per example.")
    splice_steps: int = Field(32, ge=0, description="Splice steps. Captured steps re-run with the reconstruction spliced "
                              "in (0 = skip the downstream metrics, no model is loaded).")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")

    def cost(self, lab: Any) -> Estimate:
        """The SAE's weights with their gradients and Adam moments, and a batch of its activations."""
        d_sae = self.d_sae or self.expansion_factor * WIDTH_GUESS
        weights = d_sae * WIDTH_GUESS * 2 * BYTES * 4            # encoder + decoder, weights + grad + 2 Adam moments
        acts = self.batch_size * d_sae * BYTES * 3
        return Estimate(0, int(weights + acts), ("d_sae", "expansion_factor", "batch_size"))


class TrainingStep(BaseModel):
    """One logged training step (every ``log_every`` steps and the last), in the scaled input space."""

    model_config = ConfigDict(extra="forbid")
    step: int = Field(ge=0, description="Optimizer step (0-based).")
    loss: float = Field(description="Total training loss of the batch (reconstruction + sparsity/AuxK terms).")
    mse: float = Field(description="Mean squared reconstruction error per element of the batch (scaled units).")
    l1: float | None = Field(None, description="Decoder-norm-weighted L1 of the activations (relu only).")
    l0: float | None = Field(None, description="Mean active features per row, the L0 penalty's value (jumprelu).")
    aux: float | None = Field(None, description="AuxK loss (topk, only on steps with dead features).")
    dead_fraction: float = Field(ge=0, le=1, description="Share of features with no firing in the last "
                                 "dead_feature_window steps.")


class DensityBin(BaseModel):
    """Features whose firing rate on the evaluated rows lies in [10^lo, 10^hi) (the last bin includes 10^hi)."""

    model_config = ConfigDict(extra="forbid")
    lo: float = Field(description="log10 of the bin's lowest firing rate (share of rows a feature is active on).")
    hi: float = Field(description="log10 of the bin's highest firing rate.")
    n_features: int = Field(ge=0, description="Features in the bin.")


class SAEMetrics(BaseModel):
    """sae_metrics.json: SAELens-named metrics on the held-out rows, the splice (downstream) metrics when
    measured, the verdict, and the training log (the weights and shape are in sae.safetensors and
    sae_config.json)."""

    model_config = ConfigDict(extra="forbid")
    verdict: Literal["usable", "marginal", "unusable", "destructive"] = Field(description="By the thresholds in "
                                                                "neurotrace.lab.sae.verdict.")
    below_bar: list[str] = Field(default_factory=list, description="The measures that missed the verdict's "
                                 "next bar, in words.")
    explained_variance: float = Field(description="1 - fvu on the evaluated rows (SAELens' corrected formula).")
    fvu: float = Field(description="Fraction of variance unexplained: sum ||h - h_hat||^2 / sum ||h - mean h||^2.")
    mse: float = Field(ge=0, description="Mean squared reconstruction error per element, in model units.")
    l0: float = Field(ge=0, description="Mean number of active features per row.")
    dead_features: int = Field(ge=0, description="Features with no firing in the last dead_feature_window "
                               "training steps.")
    dead_fraction: float = Field(ge=0, le=1, description="dead_features / d_sae.")
    dead_feature_window: int = Field(ge=1, description="Training steps without firing after which a feature is "
                                     "dead.")
    dead_fraction_heldout: float = Field(ge=0, le=1, description="Share of features that never fire on the "
                                         "evaluated rows.")
    input_scale: float = Field(gt=0, description="Factor the inputs were multiplied by before encoding (1 = none).")
    n_train_rows: int = Field(ge=1, description="Rows trained on.")
    n_heldout_rows: int = Field(ge=0, description="Held-out rows evaluated (0: evaluated on the training rows).")
    n_excluded_rows: int = Field(ge=0, description="Rows left out at position 0, on special tokens or with a massive "
                                                   "norm (over 10x the median).")
    n_massive_rows: int = Field(0, ge=0, description="Of n_excluded_rows, those left out for a massive norm.")
    massive_norm_limit: float | None = Field(None, description="The norm above which a row counts as massive "
                                             "(10x the median row norm; null: exclude_special off).")
    final_loss: float = Field(description="Training loss at the last step.")
    splice_steps: int | None = Field(None, ge=0, description="Captured steps re-run with the reconstruction "
                                     "spliced in (null: not spliced).")
    kl_spliced: float | None = Field(None, description="Mean KL(clean || spliced) per position, nats.")
    kl_div_with_sae: float | None = Field(None, description="SAELens' name for kl_spliced, nats.")
    ce_clean: float | None = Field(None, description="Next-token cross-entropy per token, clean run, nats "
                                   "(causal models).")
    ce_spliced: float | None = Field(None, description="The same with the reconstruction spliced in, nats.")
    ce_zero: float | None = Field(None, description="The same with the site zero-ablated, nats.")
    ce_delta: float | None = Field(None, description="ce_spliced - ce_clean, nats.")
    loss_recovered: float | None = Field(None, description="(ce_zero - ce_spliced) / (ce_zero - ce_clean); 1 = "
                                         "the reconstruction loses nothing (null when the gap is 0).")
    ce_loss_without_sae: float | None = Field(None, description="SAELens' name for ce_clean, nats.")
    ce_loss_with_sae: float | None = Field(None, description="SAELens' name for ce_spliced, nats.")
    ce_loss_with_ablation: float | None = Field(None, description="SAELens' name for ce_zero, nats.")
    ce_loss_score: float | None = Field(None, description="SAELens' name for loss_recovered.")
    p_target_clean: float | None = Field(None, description="Mean p(target) at the scored position, clean run "
                                         "(steps with a target).")
    p_target_spliced: float | None = Field(None, description="The same, reconstruction spliced in.")
    p_target_delta: float | None = Field(None, description="p_target_spliced - p_target_clean.")
    damage: Damage | None = Field(None, description="The splice on neutral text (shared destructive-edit check); "
                                  "a destructive splice makes the verdict `destructive`.")
    n_rows: int = Field(ge=1, description="Captured rows of the site (before exclusion and hold-out).")
    seed: int = Field(description="The request's seed (weight init and batch order).")
    heldout_step_indices: list[int] = Field(default_factory=list, description="Indices of the captured steps "
                                            "held out (empty: none).")
    training: list[TrainingStep] = Field(default_factory=list, description="The training log.")
    model: str = Field("", description="The model the states came from.")
    site: str = Field("", description="The hook site the SAE reads.")
    architecture: str = Field("", description="'topk' or 'relu'.")
    d_in: int | None = Field(None, ge=1, description="Width of the input states.")
    d_sae: int | None = Field(None, ge=1, description="Number of features.")
    never_fired: int | None = Field(None, ge=0, description="Features active on none of the evaluated rows "
                                    "(training and held-out).")
    fire_density: list[DensityBin] = Field(default_factory=list, description="Histogram of the other features' "
                                           "firing rates on the evaluated rows, in log10 bins.")


class FitSAEResult(RunResult):
    verdict: Literal["usable", "marginal", "unusable", "destructive"] = Field(description="By the thresholds in "
                                                                "neurotrace.lab.sae.verdict (stated in the summary).")
    site: str
    d_in: int
    d_sae: int
    architecture: str
    n_rows: int = Field(description="Captured rows the SAE was fitted on.")
    metrics: dict[str, float | int | None] = Field(description="SAELens names: explained_variance, mse (per "
                                                   "element), l0, dead_features, dead_fraction, ce_loss_score, "
                                                   "ce_loss_with_sae/without_sae/with_ablation, kl_div_with_sae; "
                                                   "also fvu, ce_delta (nats), input_scale, n_heldout_rows.")
    sae: str = Field("", description="URI of sae.safetensors.")
    examples: str = Field("", description="URI of the top-activating examples CSV.")
    damage: Damage | None = Field(None, description="The splice's destructive-edit check on neutral text.")
