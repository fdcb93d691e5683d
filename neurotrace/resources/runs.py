"""Run resources. Only what a run's manifest lists is served; anything else is not found.

* ``neurotrace://runs`` - every run (id, tool, status, summary)
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


def register(server, lab: Lab) -> None:
    @server.resource("neurotrace://runs", name="runs", mime_type="application/json",
                     description="Every run: id, tool, status, created, summary (newest first).")
    async def runs_list() -> str:
        runs = lab.store.list_runs()
        return json.dumps([{"run_id": m.run_id, "tool": m.tool, "status": m.status, "created": m.created,
                            "summary": m.summary, "manifest": f"neurotrace://runs/{m.run_id}/manifest"}
                           for m in runs], indent=2)

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
