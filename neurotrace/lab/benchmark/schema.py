"""benchmark's boundary models: the request, one AUROC row, and the result."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neurotrace.lab.benchmark.planted_checks import PlantedCheck
from neurotrace.lab.errors import InputError
from neurotrace.lab.results import RunResult

Part = Literal["circuits", "planted"]


class BenchmarkRequest(BaseModel):
    """Which parts of the ground-truth benchmark to run, and how hard."""

    model_config = ConfigDict(extra="forbid")
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
