"""load_model: load a model into the cache and describe it; the model catalog the models tool lists."""

from typing import Any

from neurotrace.lab.lab import Lab
from neurotrace.lab.load_model.schema import LoadModelResult
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.embedded import EMBEDDED_MODELS
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.model.weights.lora import shipped_catalog
from neurotrace.lab.progress import NULL_REPORTER, Reporter


def run_load_model(request: ModelRef, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> LoadModelResult:
    """Load (or reuse) a model and return its shape; no run directory is written."""
    lab.check(request)
    reporter.step(0, 1, f"loading {request.model}")
    loaded = lab.cache.get(request)
    info = loaded.info()
    summary = (f"{request.model} is loaded as a {info['lm_kind']} LM ({info['family']}): {info['n_layers']} layers, "
               f"d_model={info['d_model']}, d_mlp={info['d_mlp']}, vocab={info['d_vocab']}, "
               f"{info['bytes'] / 2**20:.1f} MiB in memory on {info['device']}.")
    where = lab.cache.placement_of(loaded)
    if len(where["layers"]) > 1 or "disk" in where["device_bytes"]:
        summary += " Layers: " + "; ".join(f"{d} {r}" for d, r in where["layers"].items()) + "."
    if info.get("note"):
        summary += f" Note: {info['note']}."
    nxt = (f"Any experiment tool can now use model '{request.model}' without reloading it, e.g. trace "
           f"{{\"request\": {{\"models\": [\"{request.model}\"], \"pack\": \"geography\"}}}} to locate stored facts"
           + (" (masked LMs are traced at the mask)." if info["lm_kind"] == "masked" else ", or logit_lens / "
              "attention / attribute on a prompt."))
    return LoadModelResult(summary=summary, model=info, cache_bytes=lab.cache.used_bytes(), next=nxt)


def model_catalog(lab: Lab) -> dict[str, Any]:
    """Every model that can be named without a path: embedded and catalog models, installed or not."""
    embedded = {name: {"description": desc, "installed": True, "source": "embedded"}
                for name, desc in EMBEDDED_MODELS.items()}
    named = {m.name: {"description": m.description, "license": m.license, "hub_id": m.hub_id,
                      "installed": catalog.is_installed(m.name), "source": "catalog",
                      "install": f"neurotrace models fetch {m.name}"} for m in catalog.CATALOG.values()}
    tuned = {pair: {"description": entry["description"], "installed": catalog.is_installed(pair.split("+")[0]),
                    "source": "adapter", "card": _card_digest(entry["card"])}
             for pair, entry in shipped_catalog().items()}
    return {"loaded": lab.cache.listing(), "used_bytes": lab.cache.used_bytes(),
            "budget_bytes": lab.cache.budget_bytes, "used_by_device": lab.cache.used_by_device(),
            "budgets": lab.cache.budgets(), "models": {**embedded, **named, **tuned}}


def _card_digest(card: dict[str, Any]) -> dict[str, Any]:
    """An adapter card without its prompt lists: recipe, minutes, accuracy before/after, sha256."""
    acc = card.get("accuracy", {})
    return {"recipe": card.get("recipe"), "minutes": card.get("minutes"), "sha256": card.get("sha256"),
            "accuracy": {side: {part: v.get("accuracy") for part, v in parts.items()} for side, parts in acc.items()}}
