"""What a trace run says about where to edit: the located layer, and each fact's indirect effect per layer.

The located layer is the layer where the MLP's average indirect effect at the last subject token peaks
(trace's ``aie['mlp']``; without MLP rows, the trace's overall peak). Per fact, the indirect effect per
layer is the MLP row of ``indirect['mlp']`` at the fact's last subject token; facts are matched by prompt.
The trace's file is read as JSON (only these fields), so this module needs nothing from tracing's code.
"""

from dataclasses import dataclass, field

from neurotrace.lab.errors import InputError, NotFound
from neurotrace.lab.lab import Lab

LAST_SUBJECT = "last subject token"


@dataclass
class Located:
    run_id: str
    layer: int | None
    per_fact: dict[str, list[float]] = field(default_factory=dict)   # prompt -> indirect effect per layer
    mean: list[float] = field(default_factory=list)                  # AIE per layer at the last subject token


def latest_trace(lab: Lab, model: str) -> str | None:
    """The newest complete trace run that traced ``model`` (its manifest names the model)."""
    for m in lab.store.list_runs("trace"):
        if m.status == "complete" and model in m.models:
            return m.run_id
    return None


def read_trace(lab: Lab, run_id: str, model: str, field_name: str = "trace_run_id") -> Located:
    """The located layer and per-fact MLP effects of ``model`` in trace run ``run_id``."""
    try:
        data = lab.store.read_json(run_id, "trace_results.json")
    except (NotFound, InputError, OSError, ValueError) as exc:
        raise InputError(field_name, f"{run_id!r} is not a readable trace run", fix="give a trace run id from "
                         "neurotrace://runs, or omit it") from exc
    record = data.get("models", {}).get(model)
    if record is None:
        raise InputError(field_name, f"trace run {run_id} did not trace {model!r}",
                         fix=f"trace {model!r} first, or omit trace_run_id")
    cats = record.get("categories", [])
    mlp = record.get("aie", {}).get("mlp")
    mean: list[float] = []
    layer = (record.get("peak") or {}).get("layer")
    if mlp and LAST_SUBJECT in cats:
        c = cats.index(LAST_SUBJECT)
        mean = [float(row[c]) if row[c] == row[c] else 0.0 for row in mlp]            # nan -> 0
        layer = max(range(len(mean)), key=mean.__getitem__)
    per_fact = {}
    for f in record.get("facts", []):
        rows = (f.get("indirect") or {}).get("mlp")
        if rows and f.get("subject_range"):
            pos = int(f["subject_range"][1]) - 1
            per_fact[f["prompt"]] = [float(r[pos]) for r in rows]
    return Located(run_id=run_id, layer=layer, per_fact=per_fact, mean=mean)
