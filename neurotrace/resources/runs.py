"""Run resources. Only what a run's manifest lists is served; anything else is not found.

* ``neurotrace://runs`` - runs newest first, one page (``next`` / ``neurotrace://runs/page/{cursor}``);
  failed runs apart at ``neurotrace://runs/failed``
* ``neurotrace://runs/{run_id}/manifest`` - one run's manifest
* ``neurotrace://runs/{run_id}/artifacts/{path}`` - an artifact listed in the manifest
* ``neurotrace://models`` - models loaded in the cache
"""

import json
from urllib.parse import unquote

from neurotrace.lab.lab import Lab
from neurotrace.lab.runs import media_type
from neurotrace.resources._faults import resource_faults

TEXT_TYPES = ("application/json", "application/x-ndjson", "text/")
PAGE = 25


def _row(m) -> dict:
    summary = (m.summary or "").split("\n", 1)[0]
    return {"run_id": m.run_id, "tool": m.tool, "status": m.status, "created": m.created,
            "summary": summary if len(summary) <= 160 else summary[:159].rsplit(" ", 1)[0] + "…",
            "manifest": f"neurotrace://runs/{m.run_id}/manifest"}


def runs_page(lab: Lab, cursor: str | None) -> dict:
    """One page of non-failed runs, newest first, starting after run ``cursor`` (None: the newest)."""
    runs = [m for m in lab.store.list_runs() if m.status != "failed"]
    start = 0 if cursor is None else next((i for i, m in enumerate(runs) if m.run_id < cursor), len(runs))
    page = runs[start:start + PAGE]
    more = start + PAGE < len(runs)
    n_failed = sum(1 for m in lab.store.list_runs() if m.status == "failed")
    return {"runs": [_row(m) for m in page], "next_cursor": page[-1].run_id if more else None,
            "next": f"neurotrace://runs/page/{page[-1].run_id}" if more else None,
            "failed": n_failed, "failed_runs": "neurotrace://runs/failed"}


def register(server, lab: Lab) -> None:
    @server.resource("neurotrace://runs", name="runs", mime_type="application/json",
                     description=f"Runs, newest first, {PAGE} per page (next: the next page's URI); failed runs "
                                 "are listed apart at neurotrace://runs/failed.")
    async def runs_list() -> str:
        return json.dumps(runs_page(lab, None), indent=1)

    @server.resource("neurotrace://runs/page/{cursor}", name="runs_page", mime_type="application/json",
                     description="A later page of neurotrace://runs (the cursor comes from the previous page).")
    async def runs_later(cursor: str) -> str:
        return json.dumps(runs_page(lab, cursor), indent=1)

    @server.resource("neurotrace://runs/failed", name="failed_runs", mime_type="application/json",
                     description="Failed runs (newest first, at most 50) with their error messages.")
    async def runs_failed() -> str:
        failed = [m for m in lab.store.list_runs() if m.status == "failed"][:PAGE * 2]
        return json.dumps([{**_row(m), "error": (m.error or "")[:300]} for m in failed], indent=1)

    @server.resource("neurotrace://runs/{run_id}/manifest", name="run_manifest", mime_type="application/json",
                     description="A run's manifest: status, seed, versions, model fingerprints, artifacts.")
    async def run_manifest(run_id: str) -> str:
        with resource_faults():
            return lab.store.manifest(run_id).model_dump_json(indent=2)

    @server.resource("neurotrace://runs/{run_id}/artifacts/{+path}", name="run_artifact",
                     description="One artifact of a run (JSON/CSV/Markdown as text; PNG/arrays as bytes).")
    async def run_artifact(run_id: str, path: str) -> str | bytes:
        with resource_faults():
            file = lab.store.artifact_path(run_id, unquote(path))
        data = file.read_bytes()
        if media_type(file.name).startswith(TEXT_TYPES) or file.suffix in (".md", ".csv", ".tsv", ".txt"):
            return data.decode("utf-8")
        return data

    @server.resource("neurotrace://models", name="loaded_models", mime_type="application/json",
                     description="Models loaded in the shared cache, with memory use and the budget.")
    async def loaded_models() -> str:
        return json.dumps({"loaded": lab.cache.listing(), "used_bytes": lab.cache.used_bytes(),
                           "budget_bytes": lab.cache.budget_bytes}, indent=2)
