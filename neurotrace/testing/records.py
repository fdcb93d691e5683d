"""Checking a run's saved results file against its typed record, and its figures against the record.

Every experiment writes its ``*_results.json`` as ``record.model_dump(mode="json")`` and every reader
validates it back. :func:`read_back` asserts that the file on disk survives that round trip unchanged
(written -> read -> equal); :func:`assert_redraws` asserts that drawing each figure from the record read
back gives exactly the SVG the run saved (so ``plot`` redraws what the run showed)::

    rec = read_back(lab, result.run_id, "probe_results.json", ProbeResults.model_validate)
    assert_redraws(lab, result.run_id, {"accuracy": accuracy}, rec)
"""

import io
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import matplotlib
from pydantic import BaseModel

from neurotrace.lab.lab import Lab
from neurotrace.lab.plotstyle import close

R = TypeVar("R", bound=BaseModel)


def read_back(lab: Lab, run_id: str, rel: str, validate: Callable[[Any], R]) -> R:
    """The record of the run's results file ``rel``; asserts the file is exactly the record's JSON dump and
    that the record survives a second trip through JSON."""
    data = lab.store.read_json(run_id, rel)
    record = validate(data)
    assert record.model_dump(mode="json") == data, f"{rel} is not the JSON dump of its record"
    assert validate(record.model_dump(mode="json")) == record, f"{rel}: the record changes on a round trip"
    return record


def figure_svg(fig: Any) -> bytes:
    """The SVG bytes of ``fig`` as the run store writes them (PNG first, then SVG with a fixed hash salt and
    no date); closes it."""
    fig.savefig(io.BytesIO(), format="png", dpi=120, bbox_inches="tight")
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "neurotrace"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    close(fig)
    return buf.getvalue()


def assert_redraws(lab: Lab, run_id: str, figures: Mapping[str, Callable[..., Any]], record: BaseModel,
                   names: Mapping[str, str] | None = None) -> None:
    """Each ``figures[kind](record)`` equals the run's saved ``figures/<name>.svg`` (name defaults to kind)."""
    for kind, fn in figures.items():
        rel = f"figures/{(names or {}).get(kind, kind)}.svg"
        saved = lab.store.artifact_path(run_id, rel).read_bytes()
        assert figure_svg(fn(record)) == saved, f"{kind} drawn from the record differs from the run's {rel}"
