"""plot: re-draw any figure of any run from the results it saved.

Every experiment saves its numbers as JSON in its run directory (``trace_results.json``,
``clamp_results.json``...) and its module offers figure functions over that JSON. ``plot`` reads a run's
manifest to learn which tool made it, looks up that tool's declared
:class:`~neurotrace.lab.experiment.Figures` (its ``kinds`` map a figure kind to
``fn(results: dict, **options) -> matplotlib Figure``), loads the results file and draws the requested
kinds into a *new* ``plot`` run that records the source run as its input. The source run is never
modified, so plots can be re-drawn with other options at any time.

The results file is the one the family declares (``Figures.results_file``). ``Figures.applies``
({kind: fn(results) -> bool}): without a ``kind``, ``plot`` leaves out the kinds the run has no data for
(a trace without ``heads: true`` has no head figure); asked for by name, such a kind is still drawn (it
says what is missing).
"""

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from neurotrace.lab.errors import InputError
from neurotrace.lab.experiment import Figures
from neurotrace.lab.experiments import FAMILIES
from neurotrace.lab.lab import Lab
from neurotrace.lab.plotstyle import figure_style
from neurotrace.lab.plotting.schema import PlotRequest, PlotResult
from neurotrace.lab.progress import NULL_REPORTER, Reporter

#: tool name -> what plot redraws for its runs, read from each family's declared Experiment
REDRAWABLE: dict[str, Figures] = {e.name: e.figures for e in FAMILIES if e.figures is not None}

FigureFn = Callable[..., Any]


def _figures_of(tool: str) -> Figures:
    figures = REDRAWABLE.get(tool)
    if figures is None:
        raise InputError("run_id", f"runs of tool {tool!r} have no figures to plot",
                         fix="plot a run of one of: " + ", ".join(sorted(REDRAWABLE)))
    return figures


def available_kinds(tool: str) -> list[str]:
    """The figure kinds :func:`run_plot` can draw for runs of ``tool``."""
    return list(_figures_of(tool).kinds)


def _check_options(kind: str, fn: FigureFn, options: dict[str, Any]) -> dict[str, Any]:
    """The options ``fn`` accepts, each checked against its annotation; an unknown option or a value of
    the wrong type is an InputError naming the option, the expected type and the allowed values."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(options)
    accepted = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    hints = _hints(fn)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        table = "; ".join(f"{n} ({_expected(hints.get(n), p.default)})" for n, p in accepted.items())
        raise InputError(f"options.{unknown[0]}", f"figure kind {kind!r} takes no option {unknown[0]!r}",
                         fix=f"use: {table}" if accepted else "omit options for this kind")
    for name, value in options.items():
        hint = hints.get(name)
        if hint is None:
            continue
        try:
            TypeAdapter(hint).validate_python(value, strict=False)
        except ValidationError as exc:
            raise InputError(f"options.{name}", f"figure kind {kind!r} expects {_expected(hint, accepted[name].default)}"
                             f" (got a {type(value).__name__})", fix=f"give {name} as {_expected(hint, None)}") from exc
    return dict(options)


def _hints(fn: FigureFn) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except (NameError, TypeError):  # an annotation that cannot be resolved: no type check for it
        return {}


def _expected(hint: Any, default: Any) -> str:
    """'one of ['a', 'b']' / 'int' / 'str or None', with the default when there is one."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        text = f"one of {list(args)}"
    elif args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        text = " or ".join("None" if a is type(None) else _expected(a, inspect.Parameter.empty) for a in args)
    elif typing.get_origin(hint) is not None:
        text = str(hint).replace("typing.", "")
    else:
        text = getattr(hint, "__name__", None) or (str(hint) if hint is not None else "any value")
    has_default = default is not inspect.Parameter.empty and default is not None
    return text + (f", default {default!r}" if has_default else "")


def _select(request: PlotRequest, tool: str, figures: Mapping[str, FigureFn]) -> list[str]:
    kinds = list(figures)
    if request.kind is None:
        return kinds
    if request.kind not in figures:
        raise InputError("kind", f"unknown figure kind {request.kind!r} for a {tool} run",
                         fix="use one of: " + ", ".join(kinds))
    return [request.kind]


def _draw(kind: str, fn: FigureFn, results: Any, options: dict[str, Any], run_id: str) -> Any:
    try:
        return fn(results, **options)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise InputError("options" if options else "kind", f"figure {kind!r} could not be drawn from run {run_id}: "
                         f"{type(exc).__name__}: {exc}", fix="check the options, or re-run the source tool") from exc


def run_plot(request: PlotRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> PlotResult:
    """Draw figure(s) of a finished run into a new ``plot`` run (PNG files, also returned as images)."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    manifest = lab.store.manifest(request.run_id)
    source = _figures_of(manifest.tool)
    figures = source.kinds
    kinds = _select(request, manifest.tool, figures)
    results = lab.store.read_json(request.run_id, source.results_file)
    if request.kind is None:
        kinds = [k for k in kinds if k not in source.applies or source.applies[k](results)] or kinds
    options = {k: _check_options(k, figures[k], request.options) for k in kinds}
    with lab.store.open_run("plot", request) as run:
        run.add_input(request.run_id)
        for model_id, fp in manifest.models.items():
            run.add_model(model_id, fp)
        uris = []
        for i, kind in enumerate(kinds):
            reporter.step(i, len(kinds), f"drawing {kind}")
            with figure_style(request.style):
                fig = _draw(kind, figures[kind], results, options[kind], request.run_id)
            uris.append(run.write_figure(f"figures/{kind}.png", fig, dpi=request.dpi))
        summary = (f"Drew {', '.join(kinds)} for {manifest.tool} run {request.run_id}"
                   + (f" with options {request.options}" if request.options else "") + ".")
        run.set_summary(summary)
        artifacts = run.artifact_uris()
    reporter.step(len(kinds), len(kinds), "done")
    others = [k for k in figures if k not in kinds]
    return PlotResult(run_id=run.run_id, summary=summary, artifacts=artifacts, figures=uris,
                      source_run_id=request.run_id, source_tool=manifest.tool, kinds=kinds,
                      available_kinds=list(figures),
                      next=(f"Other kinds for this run: {', '.join(others)}." if others else
                            "Every figure kind of this run is drawn; read the images or the PNG artifacts."))
