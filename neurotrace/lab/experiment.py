"""The one entry a family declares per tool: :class:`Experiment`, read by every face.

A family's face (``neurotrace/lab/<family>/__init__.py``) declares, once, each tool it serves::

    TRACE = Experiment(run_trace, TraceRequest, TraceResult,
                       figures=Figures(figures.FIGURES, RESULTS_FILE, TraceResults, applies=figures.APPLIES))

and :data:`neurotrace.lab.experiments.EXPERIMENTS` lists the entries. From that list the CLI builds its
subcommands, the server its tool flags (``openWorldHint``, which tools take ``wait``), ``plot`` the
figures it can redraw, ``neurotrace.__all__`` the Python face, and the docs contract test what every
face must name. The tool's *name* lives on its request type (``TraceRequest.tool == "trace"``), as does
whether it can run on NDIF (``on_ndif``) and its cost model (``TraceRequest.cost(lab)``, the typed method beside the fields it reads, which
:func:`neurotrace.lab.jobs.budget.check_request` calls): nothing is keyed by a string typed twice.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

FigureFn = Callable[..., Any]  # fn(results: dict, **options) -> matplotlib Figure


@dataclass(frozen=True)
class Figures:
    """What ``plot`` re-reads and redraws for a family's runs.

    ``kinds`` maps a figure kind to ``fn(results, **options) -> Figure`` over the JSON in ``results_file``
    (a run artifact, validated by ``records`` when given); ``applies`` ({kind: fn(results) -> bool}) lets
    ``plot`` without a kind leave out the kinds a run has no data for."""

    kinds: Mapping[str, FigureFn]
    results_file: str
    records: type[BaseModel] | None = None
    applies: Mapping[str, Callable[[Any], bool]] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """One tool: ``run(request, *, lab, reporter) -> result``, its types, its figures and its flags.

    * ``figures``: what ``plot`` can redraw; ``None`` with ``no_figures`` saying why (a family whose runs
      carry no figure, or whose figures cannot be redrawn from saved numbers).
    * ``reaches_hub``: it names a model to load, so an online server may download one (``openWorldHint``).
    * ``detachable``: it may run as a detached job (``wait: false``, MCP tasks); a quick call is not.
    * ``remote`` (read from the request type's ``on_ndif``): it can run its forwards on NDIF
      (``remote: true``); the others refuse that field (:func:`neurotrace.lab.model.runtime.ndif.check_execution`).
    """

    run: Callable[..., Any]
    request: type[BaseModel]
    result: type[BaseModel]
    figures: Figures | None = None
    no_figures: str | None = None
    reaches_hub: bool = True
    detachable: bool = True

    def __post_init__(self) -> None:
        if not isinstance(getattr(self.request, "tool", None), str):
            raise TypeError(f"{self.request.__name__} must declare its tool name: tool: ClassVar[str] = '...'")
        if self.run.__name__ != f"run_{self.name}":
            raise TypeError(f"{self.run.__name__} must be named run_{self.name} (tool x = run_x everywhere)")
        if (self.figures is None) == (self.no_figures is None):
            raise TypeError(f"{self.name}: give exactly one of figures= and no_figures= (why plot cannot redraw)")

    @property
    def name(self) -> str:
        """The tool name: MCP tool, CLI subcommand, ``run_<name>`` and ``tools/<name>.py``."""
        return self.request.tool  # type: ignore[attr-defined]

    @property
    def remote(self) -> bool:
        """Whether it can run on NDIF: the request type's own ``on_ndif`` (so the run checks the same flag)."""
        return bool(getattr(self.request, "on_ndif", False))

    @property
    def summary(self) -> str:
        """The first line of the run function's docstring."""
        return (self.run.__doc__ or self.name).strip().splitlines()[0]
