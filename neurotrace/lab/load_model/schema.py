"""load_model's result: the loaded model's shape (the request is :class:`~neurotrace.lab.model.weights.loading.ModelRef`)."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class LoadModelResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    summary: str
    model: dict[str, Any] = Field(description="key, lm_kind, family, n_layers, d_model, d_mlp, d_vocab, bytes, "
                                              "fingerprint, ...")
    cache_bytes: int = Field(description="Bytes held in memory by all cached models after this load.")
    next: str = ""
