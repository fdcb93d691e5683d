"""Turn a probe run into its artifacts and result.

Written files:

* ``directions.safetensors``: ``layer.{L}`` (d_model,) the unit direction of the probe fitted on all
  prompts at layer L (toward the positive label) and ``shuffled.layer.{L}`` the same for the first
  shuffled labelling; metadata ``sites`` (JSON {L: site}), ``classes``, ``method``. ``steer`` reads it.
* ``tables/probe.csv``: layer, site, accuracy, accuracy_std, shuffled.
* ``probe_results.json`` (input of :mod:`neurotrace.lab.probe.figures`), ``figures/accuracy.png``.
"""

import json
from dataclasses import dataclass
from math import comb

from torch import Tensor

from neurotrace.lab.probe.figures import FIGURES, RESULTS_FILE
from neurotrace.lab.probe.schema import LayerAccuracy, ProbeRequest, ProbeResult, ProbeResults
from neurotrace.lab.runs import Run


@dataclass
class LayerFit:
    layer: int
    site: str
    accuracy: float
    accuracy_std: float
    shuffled: float
    direction: Tensor
    shuffled_direction: Tensor


ALPHA = 0.05


def best_layer_p(accuracy: float, n: int, chance: float, n_layers: int) -> float:
    """One-sided binomial p of ``accuracy`` (pooled held-out predictions, about ``accuracy * n`` right) against
    ``chance``, Bonferroni-corrected for picking the best of ``n_layers`` layers."""
    k = round(accuracy * n)
    tail = sum(comb(n, i) * chance ** i * (1 - chance) ** (n - i) for i in range(k, n + 1))
    return min(1.0, tail * n_layers)


def write_outputs(run: Run, request: ProbeRequest, classes: list[str], y: Tensor, k: int,
                  fits: list[LayerFit]) -> ProbeResult:
    per_layer = [LayerAccuracy(layer=f.layer, site=f.site, accuracy=f.accuracy, accuracy_std=f.accuracy_std,
                               shuffled=f.shuffled) for f in fits]
    chance = float(max((y > 0).double().mean(), (y < 0).double().mean()))
    best = max(per_layer, key=lambda r: (round(r.accuracy, 9), -r.layer))
    tensors: dict[str, Tensor] = {}
    for f in fits:
        tensors[f"layer.{f.layer}"] = f.direction
        tensors[f"shuffled.layer.{f.layer}"] = f.shuffled_direction
    meta = {"sites": json.dumps({str(f.layer): f.site for f in fits}), "classes": json.dumps(classes),
            "method": request.method}
    directions = run.write_tensors("directions.safetensors", tensors, metadata=meta)
    run.write_csv("tables/probe.csv", [r.model_dump() for r in per_layer])
    results = ProbeResults(model=request.model, method=request.method, position=request.position,
                           classes=(classes[0], classes[1]), n_prompts=len(y), k_folds=k, chance=chance,
                           best_layer=best.layer, per_layer=per_layer)
    run.write_json(RESULTS_FILE, results.model_dump(mode="json"))
    figures = [run.write_figure("figures/accuracy.png", FIGURES["accuracy"](results))]
    summary = (f"{request.method} probes for {classes[1]!r} vs {classes[0]!r} on {len(y)} prompts of {request.model} "
               f"({request.position} position, {k}-fold CV): best layer {best.layer} ({best.site}) with held-out "
               f"accuracy {best.accuracy:.3f} +- {best.accuracy_std:.3f} vs {best.shuffled:.3f} with shuffled labels "
               f"(chance {chance:.3f}).")
    p = best_layer_p(best.accuracy, len(y), chance, len(per_layer))
    summary += f" Binomial p = {p:.2g} against chance, Bonferroni over {len(per_layer)} layers"
    summary += ("." if p < ALPHA else f": not significant at {ALPHA} - with {len(y)} prompts the best of "
                f"{len(per_layer)} layers reaches this by chance; add prompts.")
    if best.accuracy - best.shuffled < 0.1:
        summary += " The label is not clearly more readable than shuffled labels at any layer."
    run.set_summary(summary)
    nxt = (f"Test whether the direction is causal: steer with direction_from {{'probe_run_id': '{run.run_id}', "
           f"'layer': {best.layer}}}, target tokens and control prompts. Readable is not the same as used."
           if p < ALPHA else "Call probe again with more labelled prompts (tens per label) before steering along "
           "this direction.")
    return ProbeResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures, next=nxt,
                       classes=classes, chance=chance, best_layer=best.layer, best_accuracy=best.accuracy, p_value=p,
                       per_layer=per_layer, directions=directions)

