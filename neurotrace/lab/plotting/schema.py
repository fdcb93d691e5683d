"""plot's request and result."""

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.plotstyle import StyleName
from neurotrace.lab.results import RunResult


class PlotRequest(BaseModel):
    """Which run to draw, which figure kind, and options for the figure function."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "plot"
    run_id: Annotated[str, Field(min_length=1, description="The run to draw (e.g. a trace or clamp_sweep run_id).")]
    kind: str | None = Field(None, description="Figure kind, e.g. 'heatmap' for trace runs or 'improvement_rate' "
                             "for clamp_sweep runs; omit to draw every kind (an unknown kind lists the valid ones).")
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword options of the figure function, "
                                     "e.g. {'model': 'fact-gpt2'}; each kind documents its own.")
    dpi: int = Field(120, ge=50, le=300, description="PNG resolution in dots per inch.")
    style: StyleName = Field("neurotrace", description="'paper': serif, no grid, boxed axes.")


class PlotResult(RunResult):
    source_run_id: str = Field(description="The run that was drawn.")
    source_tool: str = Field(description="The tool that made the source run.")
    kinds: list[str] = Field(description="The figure kinds drawn (one PNG each, in `figures`).")
    available_kinds: list[str] = Field(description="Every kind this source run's tool offers.")
