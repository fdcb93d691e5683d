"""The model-lab experiments: load a model into the cache and describe it; list and release."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.lab import Lab
from neurotrace.lab.model.loading import ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter


class LoadModelResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    summary: str
    model: dict[str, Any] = Field(description="key, kind, family, n_layers, d_model, d_mlp, d_vocab, bytes, "
                                              "fingerprint, ...")
    cache_bytes: int = Field(description="Bytes held by all cached models after this load.")
    next: str = ""


def run_load_model(request: ModelRef, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> LoadModelResult:
    """Load (or reuse) a model and return its shape; no run directory is written."""
    if reporter is not None:
        reporter.step(0, 1, f"loading {request.model}")
    loaded = lab.cache.get(request)
    info = loaded.info()
    summary = (f"{request.model} is loaded as a {info['kind']} LM ({info['family']}): {info['n_layers']} layers, "
               f"d_model={info['d_model']}, d_mlp={info['d_mlp']}, vocab={info['d_vocab']}, "
               f"{info['bytes'] / 2**20:.1f} MiB on {info['device']}.")
    nxt = ("Call trace with this model and a fact set to locate stored facts." if info["kind"] == "causal"
           else "Call trace (mask/context patching) with this model and a fact set.")
    return LoadModelResult(summary=summary, model=info, cache_bytes=lab.cache.used_bytes(), next=nxt)
