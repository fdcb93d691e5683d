"""Run directories, the unit of truth: the store (:mod:`.store`), the manifest that commits a run
(:mod:`.manifest`) and the self-contained ``report.html`` written beside it (:mod:`.htmlreport`)."""

from neurotrace.lab.runs.htmlreport import render_index
from neurotrace.lab.runs.manifest import Manifest, atomic_write_bytes, atomic_write_text, media_type
from neurotrace.lab.runs.store import RUN_ID_RE, URI_PREFIX, Run, RunStore

__all__ = ["RUN_ID_RE", "URI_PREFIX", "Manifest", "Run", "atomic_write_bytes", "atomic_write_text", "RunStore", "media_type", "render_index"]
