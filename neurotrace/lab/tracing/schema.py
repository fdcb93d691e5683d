"""trace: where does a model store a fact? Causal tracing (ROME) and mask/context patching.

Causal tracing (Meng et al., 2022) runs a prompt three ways: **clean**; **corrupted** (Gaussian
noise added to the subject's token embeddings - ``scale`` times their std, ``samples`` seeded draws -
or the subject swapped for a same-category one); and **restored**: corrupted, but with the clean
state of one site put back at one (layer, position). p(target) of the restored run minus that of the
corrupted run is the *indirect effect* of the site. Sites are the residual stream after each layer
(``resid``), or the MLP / attention outputs (``mlp`` / ``attn``) over a window of layers centred on
the layer (ROME used 10). A peak at the MLPs of the last subject token in middle layers is the classic
signature of stored factual associations.

For masked LMs the scored position is the mask: ``mask_patch`` restores the clean residual at the mask
per layer (from which layer the answer is at the mask), ``context_patch`` corrupts the context word
(``context_from`` -> ``context_to``) and restores it per layer (how long the context word matters).

Facts the model gets wrong on the clean prompt are flagged as unknown and left out of averages.
``mode='approx'`` estimates the whole grid from one forward and backward (attribution patching) and,
with ``check_agreement``, reports its agreement with the exact grid.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neurotrace.lab.errors import InputError
from neurotrace.lab.facts import Fact
from neurotrace.lab.results import RunResult

Kind = Literal["resid", "mlp", "attn"]


class NoiseCorruption(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["noise"] = "noise"
    scale: Annotated[float, Field(gt=0, description="Noise std as a multiple of the subject-embedding std "
                                                    "(ROME used 3).")] = 3.0
    samples: Annotated[int, Field(ge=1, le=100, description="Seeded noise draws averaged per cell.")] = 10


class SwapCorruption(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["swap"] = "swap"


Corruption = Annotated[NoiseCorruption | SwapCorruption, Field(discriminator="kind")]


class TraceRequest(BaseModel):
    """What to trace, on which models, how."""

    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(min_length=1, description="Models to trace on the same facts: embedded names "
                                                          "(fact-gpt2, fact-bert ...), HuggingFace ids or local dirs.")
    facts: list[Fact] = Field(default_factory=list, description="Facts inline (template with '{}', "
                                                                  "clean_subject, corrupt_subject, target ...).")
    dataset_run_id: str | None = Field(None, description="A generate_facts run whose dataset.json to trace.")
    pack: str | None = Field(None, description="A built-in fact pack: cybersecurity, medicine, law, finance, "
                                               "programming, geography.")
    max_facts: Annotated[int | None, Field(ge=1, description="Trace at most this many facts.")] = None
    kinds: list[Kind] = Field(default_factory=lambda: ["resid", "mlp", "attn"], min_length=1,
                              description="Sites restored: resid (layer output), mlp, attn (windows).")
    window: Annotated[int | None, Field(ge=1, description="Layers restored together for mlp/attn, centred on "
                                                          "the layer; default scales ROME's 10 of 48 layers "
                                                          "to the model (1 for 6 layers, 2 for 12).")] = None
    corruption: Corruption = Field(default_factory=NoiseCorruption, description="{'kind':'noise', 'scale':3, "
                                   "'samples':10} or {'kind':'swap'} (uses each fact's corrupt_subject).")
    mode: Literal["exact", "approx"] = Field("exact", description="'exact' restores every cell; 'approx' = "
                                             "attribution patching (one forward + backward per fact).")
    check_agreement: bool = Field(False, description="With mode='approx', also run exact and report agreement.")
    heads: bool = Field(False, description="Also patch each attention head's output at the scored position.")
    seed: int = Field(0, description="Seed of the noise generator.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")

    @model_validator(mode="after")
    def _one_source(self) -> "TraceRequest":
        given = [n for n, v in (("facts", self.facts), ("dataset_run_id", self.dataset_run_id),
                                ("pack", self.pack)) if v]
        if len(given) != 1:
            raise InputError("facts", f"give exactly one of facts, dataset_run_id or pack (got {given or 'none'})",
                             fix="e.g. pack='geography', or dataset_run_id from generate_facts")
        if len(set(self.kinds)) != len(self.kinds):
            raise InputError("kinds", "kinds repeat", fix="list each of resid, mlp, attn at most once")
        return self


class PeakSite(BaseModel):
    kind: str
    layer: int
    position: str = Field(description="A token category (first/middle/last subject token, ...) or a token.")
    effect: float = Field(description="Indirect effect (restored - corrupted p(target)).")


class ModelTrace(BaseModel):
    model: str
    kind: Literal["causal", "masked"]
    n_layers: int
    n_facts: int
    n_known: int = Field(description="Facts whose clean top-1 prediction is the target.")
    unknown_facts: list[str] = Field(description="Facts the model does not know (left out of averages).")
    mean_p_clean: float
    mean_p_corrupted: float
    peak: PeakSite | None = Field(None, description="Peak of the average indirect effect over known facts.")
    peak_layer_mask_patch: int | None = None
    peak_layer_context_patch: int | None = None
    notes: list[str] = Field(default_factory=list)


class TraceResult(RunResult):
    models: list[ModelTrace]
    interpretation: list[str] = Field(default_factory=list, description="Plain-language reading.")
    agreement: dict[str, Any] | None = Field(None, description="approx vs exact: pearson r, max |diff|, "
                                                                "peak agreement.")
    results: str = Field("", description="URI of trace_results.json.")
