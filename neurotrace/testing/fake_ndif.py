"""A local stand-in for NDIF: a :class:`neurotrace.lab.model.runtime.ndif.Transport` that runs each job as the
server would, on a model of its own.

``post`` records the envelope and payload (what would cross the network) and queues the job; each
``get`` advances it one status (``QUEUED`` -> ``RUNNING`` -> ``COMPLETED``, or stays ``RUNNING`` with
``hold=True``, to test cancellation). On completion the payload is deserialised with nnsight's own
:meth:`RequestModel.deserialize` against the server model's persistent objects, so the traced block
runs on weights the client never touches, and the saved values come back as nnsight's result blob
(``torch.save``, zstd-compressed when the request was).
"""

import io
import json
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Job:
    envelope: dict[str, Any]
    payload: bytes
    polls: int = 0
    result: bytes | None = None


@dataclass
class FakeNdif:
    """Runs jobs on ``server`` (an nnsight wrapper) at the url ``url``; see the module docstring."""

    server: Any
    url: str = "https://ndif.test"
    hold: bool = False
    jobs: dict[str, Job] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)

    def post(self, url: str, api_key: str, envelope: str, payload: bytes) -> str:
        assert url == self.url, url
        self.keys.append(api_key)
        job_id = f"job-{len(self.jobs) + 1}"
        self.jobs[job_id] = Job(json.loads(envelope), payload)
        return json.dumps({"id": job_id, "status": "RECEIVED", "description": "received"})

    def get(self, url: str, api_key: str, job_id: str) -> str | None:
        job = self.jobs[job_id]
        job.polls += 1
        if job.polls == 1:
            return json.dumps({"id": job_id, "status": "QUEUED", "description": "queued"})
        if self.hold or job.polls == 2:
            return json.dumps({"id": job_id, "status": "RUNNING", "description": "running"})
        job.result = self.run(job)
        return json.dumps({"id": job_id, "status": "COMPLETED", "description": "done",
                           "data": f"{self.url}/results/{job_id}"})

    def download(self, url: str) -> bytes:
        job = self.jobs[url.rsplit("/", 1)[-1]]
        assert job.result is not None
        return job.result

    def run(self, job: Job) -> bytes:
        """What the server does: rebuild the traced block, run it on its own model, send back the saves."""
        from nnsight.schema.request import RequestModel
        from nnsight.tracing.tracer import _saves, dec, inc

        compress = bool(job.envelope.get("compress"))
        tracer = RequestModel.deserialize(job.payload, self.server._remoteable_persistent_objects(), compress=compress)
        frame = tracer.info.frame
        inc()
        try:
            tracer.execute(tracer.info.code)
            saves = {k: v for k, v in frame.f_locals.items() if id(v) in _saves()}
        finally:
            dec()
        buffer = io.BytesIO()
        torch.save(saves, buffer)
        blob = buffer.getvalue()
        if compress:
            import zstandard

            blob = zstandard.ZstdCompressor(level=6).compress(blob)
        return blob
