"""probe: is a two-valued label linearly readable from the residual stream, and at which layer?

For each chosen layer ``L`` the residual ``blocks.L.hook_resid_pre`` (``L = n_layers``: the final
residual, ``blocks.{n-1}.hook_resid_post``) is recorded for every prompt at the scored (last) token or
averaged over tokens (:mod:`neurotrace.lab.model.runtime.pooling`). A linear probe (L2 logistic regression or
ridge, :mod:`neurotrace.lab.probe.fit`) is scored by stratified k-fold cross-validation, with the same
folds at every layer; the baseline refits it on seeded shuffles of the labels (same folds), which is
what "readable" must beat (a wide residual fits small sets of random labels on training data, never on
held-out data). The best layer is the most accurate (ties: the earliest). Each layer's probe refitted
on all prompts gives the direction saved for ``steer`` (``direction_from: {"probe_run_id": ...,
"layer": L}``), with the first shuffled-label probe's direction as its control.
"""

import torch

from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.chat import apply_chat
from neurotrace.lab.model.runtime.pooling import collect, tokenize_prompts
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.probe.fit import cross_validate, direction
from neurotrace.lab.probe.report import LayerFit, write_outputs
from neurotrace.lab.probe.schema import ProbeRequest, ProbeResult
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.seeding import make_generator


def resid_site(layer: int, n_layers: int) -> str:
    """The residual entering block ``layer``; ``layer == n_layers`` is the output of the last block."""
    return site_name("resid_post", n_layers - 1) if layer == n_layers else site_name("resid_pre", layer)


def _labels(request: ProbeRequest) -> tuple[list[str], torch.Tensor, int]:
    if len(request.labels) != len(request.prompts):
        raise InputError("labels", f"{len(request.labels)} labels for {len(request.prompts)} prompts",
                         fix="give one label per prompt")
    classes = list(dict.fromkeys(request.labels))
    if len(classes) != 2:
        raise InputError("labels", f"the probe needs exactly two distinct labels, got {len(classes)}",
                         fix="label each prompt with one of two values, e.g. 'yes' / 'no'")
    if request.positive is not None:
        if request.positive not in classes:
            raise InputError("positive", f"{request.positive!r} is not one of the labels {classes}",
                             fix="use one of the two labels or omit `positive`")
        classes = [c for c in classes if c != request.positive] + [request.positive]
    y = torch.tensor([1.0 if label == classes[1] else -1.0 for label in request.labels], dtype=torch.float64)
    k = min(request.k_folds, int((y > 0).sum()), int((y < 0).sum()))
    if k < 2:
        raise InputError("labels", "each label needs at least 2 prompts for cross-validation",
                         fix="add prompts of the rarer label")
    return classes, y, k


def _layers(request: ProbeRequest, lm: LoadedModel) -> list[int]:
    if request.layers is None:
        return list(range(lm.n_layers + 1))
    bad = [layer for layer in request.layers if not 0 <= layer <= lm.n_layers]
    if bad or not request.layers:
        raise InputError("layers", f"layers {bad or '[]'} are out of range", fix=f"use layers in 0..{lm.n_layers}")
    return sorted(set(request.layers))


def run_probe(request: ProbeRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> ProbeResult:
    """Cross-validated linear probes per layer with a shuffled-label baseline (see the module docstring)."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    classes, y, k = _labels(request)
    ref = ModelRef(model=request.model, device=request.device)
    with lab.cache.lease(ref) as lm:
        request = apply_chat(request, lm.tokenizer, request.model, many=("prompts",))
        layers = _layers(request, lm)
        sites = [resid_site(layer, lm.n_layers) for layer in layers]
        with lab.store.open_run("probe", request, seed=request.seed) as run:
            run.add_model(request.model, lm.fingerprint, lm.provenance)
            states = collect(lm, tokenize_prompts(lm, request.prompts), sites, request.position, reporter)
            shuffles = [y[torch.randperm(len(y), generator=make_generator(request.seed + 1 + s))]
                        for s in range(request.n_shuffles)]
            fits = []
            for i, (layer, site) in enumerate(zip(layers, sites, strict=True)):
                reporter.step(i, len(layers), f"probing layer {layer}")
                x = states[site].double()                                              # (prompts, d_model)
                acc = cross_validate(x, y, request.method, request.l2, k, make_generator(request.seed))
                null = [cross_validate(x, ys, request.method, request.l2, k, make_generator(request.seed)).mean()
                        for ys in shuffles]
                fits.append(LayerFit(layer, site, float(acc.mean()), float(acc.std(unbiased=False)),
                                     float(torch.stack(null).mean()),
                                     direction(x, y, request.method, request.l2).float(),
                                     direction(x, shuffles[0], request.method, request.l2).float()))
            reporter.step(len(layers), len(layers), "writing the run")
            return write_outputs(run, request, classes, y, k, fits)
