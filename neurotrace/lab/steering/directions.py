"""Where a steering direction comes from, and its controls.

* ``pairs``: the difference of means of ``blocks.L.hook_resid_pre`` at each prompt's last token,
  concepts minus controls. Its *shuffled* control swaps the members of a seeded half of the pairs
  (``floor(n/2)`` of them) and takes the same difference: the contrast with the labels scrambled,
  which is near zero when the direction comes from the pairing and not from the prompts themselves.
  Both keep their natural norms; :func:`neurotrace.lab.steering.run` scales them by the same factor.
* ``sae``: row ``feature`` of a dictionary's decoder ``W_dec`` (a fit_sae run, or any ``dictionary``
  reference: :mod:`neurotrace.lab.sae.dictionary`) at its output site (no shuffled control).
* ``probe``: a probe run's direction at ``layer`` and its shuffled-label direction as the control.

Runs are read through the run store (their manifests must say the right tool and ``complete``).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.explain import dictionary_labels
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.runtime.pooling import collect, tokenize_prompts
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.probe import ProbeResults
from neurotrace.lab.progress import Reporter
from neurotrace.lab.sae import Dictionary, load_dictionary
from neurotrace.lab.seeding import make_generator
from neurotrace.lab.steering.schema import PairsDirection, ProbeDirection, SAEDirection, SteerRequest


@dataclass
class Direction:
    vector: Tensor                 # (width,) float32, the direction as given
    shuffled: Tensor | None        # (width,) its shuffled control, same scale as `vector`; None if unavailable
    site: str                      # the site it lives at
    source: str                    # a few words for the report
    input_run: str | None = None
    dictionary: Dictionary | None = None   # the dictionary an SAE direction came from (its sha256 is recorded)


def _check_run(lab: Lab, run_id: str, tool: str, field: str) -> None:
    manifest = lab.store.manifest(run_id)
    if manifest.tool != tool or manifest.status != "complete":
        raise InputError(field, f"run {run_id} is a {manifest.status} {manifest.tool} run, not a complete {tool}",
                         fix=f"pass the run_id a {tool} call returned")


def _pairs(spec: PairsDirection, request: SteerRequest, lm: LoadedModel, reporter: Reporter) -> Direction:
    if spec.layer >= lm.n_layers:
        raise InputError("direction_from.layer", f"layer {spec.layer} is out of range ({lm.n_layers} layers)",
                         fix=f"use 0..{lm.n_layers - 1}")
    site = site_name("resid_pre", spec.layer)
    ids = tokenize_prompts(lm, [c for c, _ in spec.pairs] + [k for _, k in spec.pairs], "direction_from.pairs")
    states = collect(lm, ids, [site], "last", reporter)[site].double()             # (2 n, d_model)
    n = len(spec.pairs)
    diffs = states[:n] - states[n:]                                                  # (n, d_model)
    flip = torch.ones(n, dtype=torch.float64)
    flip[torch.randperm(n, generator=make_generator(request.seed))[: n // 2]] = -1.0
    return Direction(diffs.mean(0).float(), (diffs * flip[:, None]).mean(0).float(), site,
                     f"difference of means of {n} pairs")


def _sae(spec: SAEDirection, lab: Lab) -> Direction:
    field = "direction_from.fit_sae_run_id" if spec.fit_sae_run_id else "direction_from.dictionary"
    ref = spec.fit_sae_run_id or spec.dictionary or ""
    if spec.fit_sae_run_id:
        _check_run(lab, spec.fit_sae_run_id, "fit_sae", field)
    d = load_dictionary(lab, ref, field=field)
    if spec.feature >= d.cfg.d_sae:
        raise InputError("direction_from.feature", f"feature {spec.feature} >= d_sae {d.cfg.d_sae}",
                         fix=f"use a feature in 0..{d.cfg.d_sae - 1}")
    what = f"run {ref}" if d.cfg.kind == "run" else f"dictionary {d.cfg.source}"
    label = dictionary_labels(lab, d).get(str(spec.feature))
    named = (f", named {label.explanation!r}: {label.verdict} on a blind test" if label else
             ", unnamed (explain can name it)")
    return Direction(d.directions(torch.tensor([spec.feature]))[0].float(), None, d.cfg.out_site,
                     f"SAE feature {spec.feature} ({what}{named})", ref if d.cfg.kind == "run" else None, d)


def _probe(spec: ProbeDirection, lab: Lab) -> Direction:
    _check_run(lab, spec.probe_run_id, "probe", "direction_from.probe_run_id")
    results = ProbeResults.model_validate(lab.store.read_json(spec.probe_run_id, "probe_results.json"))
    sites = {row.layer: row.site for row in results.per_layer}
    if spec.layer not in sites:
        raise InputError("direction_from.layer", f"probe run {spec.probe_run_id} has no layer {spec.layer}",
                         fix=f"use one of {sorted(sites)}")
    tensors = lab.store.read_tensors(spec.probe_run_id, "directions.safetensors")
    return Direction(tensors[f"layer.{spec.layer}"].float(), tensors[f"shuffled.layer.{spec.layer}"].float(),
                     sites[spec.layer], f"probe direction toward {results.classes[1]!r} (run "
                     f"{spec.probe_run_id})", spec.probe_run_id)


def resolve(request: SteerRequest, lab: Lab, lm: LoadedModel, reporter: Reporter) -> Direction:
    """The request's direction, its shuffled control and its site (see the module docstring)."""
    spec = request.direction_from
    if isinstance(spec, PairsDirection):
        return _pairs(spec, request, lm, reporter)
    return _sae(spec, lab) if isinstance(spec, SAEDirection) else _probe(spec, lab)
