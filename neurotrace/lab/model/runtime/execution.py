"""Where a request's forwards run: the backend that realises its hooks, and whether on NDIF.

The two fields are shared by every experiment that offers them (trace, clamp_sweep, capture,
intervene), so they read and validate the same everywhere. ``backend='nnsight'`` runs the same site
hooks inside nnsight's tracing context (:mod:`neurotrace.lab.model.runtime.nnsight_backend`), with the same
numbers as ``'hf'``; ``remote=true`` sends those traces to NDIF (:mod:`neurotrace.lab.model.runtime.ndif`);
the endpoint and key are server configuration, never request fields.
"""

from typing import Annotated, Literal

from pydantic import Field

BackendName = Literal["hf", "nnsight"]
Backend = Annotated[BackendName, Field(description="Hooks via PyTorch or nnsight.")]
Remote = Annotated[bool, Field(description="Run on NDIF (backend nnsight).")]
