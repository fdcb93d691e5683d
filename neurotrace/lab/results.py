"""The base of every experiment result: what an agent and a person read first."""

from pydantic import BaseModel, ConfigDict, Field


class RunResult(BaseModel):
    """Common fields of every tool result (subclass it: ``class TraceResult(RunResult): ...``)."""

    model_config = ConfigDict(extra="forbid")
    run_id: str = Field(description="The run directory's id; read neurotrace://runs/{run_id}/manifest.")
    status: str = Field("complete", description="complete | failed | cancelled")
    summary: str = Field(description="A few sentences: what was found, in plain language.")
    artifacts: list[str] = Field(default_factory=list, description="Resource URIs of every artifact.")
    figures: list[str] = Field(default_factory=list, description="Resource URIs of PNG figures (also sent "
                                                                  "as images).")
    next: str = Field("", description="A hint of the sensible next call.")
