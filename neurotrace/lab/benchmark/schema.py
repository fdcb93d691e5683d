"""benchmark's boundary models: the request, one AUROC row, the result, and the typed records of
auroc_per_seed.json, dissociation.json and planted.json."""

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neurotrace.lab.benchmark.planted_checks import PlantedCheck
from neurotrace.lab.errors import InputError
from neurotrace.lab.facts import Fact
from neurotrace.lab.results import RunResult

Part = Literal["circuits", "planted"]
MethodName = Literal["correlation", "gradient", "integrated_gradients", "patching", "random"]
CircuitName = Literal["clean", "confounded", "suppressor", "null"]


SCORES_FILE, DISSOCIATION_FILE, PLANTED_FILE = "auroc_per_seed.json", "dissociation.json", "planted.json"


class BenchmarkRequest(BaseModel):
    """Which parts of the ground-truth benchmark to run, and how hard."""

    model_config = ConfigDict(extra="forbid")
    tool: ClassVar[str] = "benchmark"
    parts: list[Part] = Field(default_factory=lambda: ["circuits", "planted"], min_length=1,
                              description="'circuits' (compiled circuits, AUROC per method) and/or 'planted' "
                                          "(trace, head patching, correlation, gradients on the planted GPT-2).")
    seeds: int = Field(16, ge=2, le=256, description="Seeds per circuit (fresh data and feature order each); "
                                                     "AUROC is reported as mean ± std over them.")
    samples: int = Field(512, ge=16, le=100_000, description="Input samples per circuit and seed.")
    ig_steps: int = Field(128, ge=4, le=4096, description="Integrated-gradients midpoint steps along the path "
                                                          "(>= 16 resolves the suppressor; fewer aliases).")
    ig_baseline: Literal["zeros", "mean"] = Field("zeros", description="Integrated-gradients baseline input: all "
                                                                       "zeros or the data mean.")
    seed: int = Field(0, description="Base seed (data, feature order, patching donors, noise).")

    @model_validator(mode="after")
    def _distinct_parts(self) -> "BenchmarkRequest":
        if len(set(self.parts)) != len(self.parts):
            raise InputError("parts", f"parts repeat: {self.parts}", fix="list 'circuits' and/or 'planted' once each")
        return self


class AurocRow(BaseModel):
    method: str = Field(description="correlation | gradient | integrated_gradients | patching | random")
    circuit: str = Field(description="clean | confounded | suppressor | null (scrambled labels)")
    auroc_mean: float = Field(description="Mean AUROC of the method's feature importances vs the causal set "
                                          "(1 = perfect, 0.5 = chance; 4 decimals, full precision in tables/auroc.csv).")
    auroc_std: float = Field(description="Std of the AUROC over seeds.")
    n: int = Field(description="AUROC values averaged (seeds; seeds x circuits for null).")


class BenchmarkResult(RunResult):
    table: list[AurocRow] = Field(default_factory=list, description="Compiled circuits: AUROC per method x circuit.")
    dissociation: dict[str, bool] = Field(default_factory=dict, description="Each expected property, checked.")
    dissociation_holds: bool | None = Field(None, description="All expected properties hold (None: not run).")
    jacobian_max_abs_diff: float | None = Field(None, description="Max |analytic - autograd| input gradient over "
                                                                  "the circuits (float64; must be <= 1e-6).")
    planted: list[PlantedCheck] = Field(default_factory=list, description="Planted transformer: where each "
                                                                         "method points, and whether it is right.")
    planted_model: str | None = Field(None, description="Directory of the planted GPT-2 (load or trace it).")
    report: str = Field("", description="URI of report.md: both tables in Markdown, each method described.")


class CircuitScores(BaseModel):
    """auroc_per_seed.json: every AUROC the compiled-circuit part measured, with the settings it ran under
    (the means and stds are in tables/auroc.csv and the result's table)."""

    model_config = ConfigDict(extra="forbid")
    seeds: int = Field(ge=1, description="Seeds per circuit.")
    samples: int = Field(ge=1, description="Input samples per circuit and seed.")
    ig_steps: int = Field(ge=1, description="Integrated-gradients midpoint steps.")
    ig_baseline: Literal["zeros", "mean"] = Field(description="Integrated-gradients baseline input.")
    seed: int = Field(description="Base seed.")
    auroc: dict[MethodName, dict[CircuitName, list[float]]] = Field(
        description="Method -> circuit -> AUROC (0..1, 0.5 = chance) per seed, in seed order; 'null' scores "
                    "every circuit's importances against scrambled labels (seeds x circuits values, seed-major).")


class Dissociation(BaseModel):
    """dissociation.json: each expected property of the compiled-circuit benchmark, checked."""

    model_config = ConfigDict(extra="forbid")
    checks: dict[str, bool] = Field(description="Property in words -> whether it holds.")
    holds: bool = Field(description="All properties hold.")
    jacobian_max_abs_diff: float = Field(ge=0, description="Max |analytic - autograd| input gradient over the "
                                                            "circuits (float64; must be <= 1e-6).")


class PlantedRecord(BaseModel):
    """planted.json: where the planted GPT-2's route runs, its facts, and what each method found."""

    model_config = ConfigDict(extra="forbid")
    model_dir: str = Field(description="Directory of the planted GPT-2 (an HF model directory).")
    mlp_layer: int = Field(ge=0, description="Layer of the planted MLP (writes the attribute at the subject).")
    head_layer: int = Field(ge=0, description="Layer of the planted attention head.")
    head: int = Field(ge=0, description="Index of the planted head within head_layer.")
    subject_last_pos: int = Field(ge=0, description="Token position of the (one-token) subject.")
    facts: list[Fact] = Field(description="The facts the model recalls through the route.")
    checks: list[PlantedCheck] = Field(description="Where each method points, and whether it is right.")
