"""The planted part of the benchmark: do trace, head patching, correlation and gradients find the route?

The planted-circuit GPT-2 (:mod:`neurotrace.lab.benchmark.planted_model`) recalls five facts through one route:
MLP 1 at the subject token writes the attribute, head 2.0 moves it to the final position. Checks:

* ``trace`` (exact and approx, restoring single-layer MLP outputs under subject noise): the peak of
  the mean indirect effect must be MLP layer 1 at the last subject token;
* head patching (``trace`` with ``heads=True``: restore one head's clean output at the final position
  under subject noise): the best head must be layer 2, head 0;
* correlation, over runs with graded subject noise (0..3 x the embedding std), of each site's
  activation with p(target), and gradient saliency |dp(target)/d activation| on clean runs, at two
  grains: component outputs (mlp_out / attn_out, norm per position) and MLP neurons
  (``mlp.hook_post`` per position). Neither is required to be right; the benchmark reports where
  they point, and that is instructive. Correlation cannot tell a cause from its downstream
  mediators: at component grain it may rank head 2.0's output at the final position (on the route,
  but not where the fact is written) first. Gradients on a confidently recalled fact see a saturated
  softmax: dp/d(planted neuron) ~ p(1 - p) is tiny, while the neurons of the *other* countries
  (which would write a competing answer) get larger, tied gradients, so neuron-level saliency points
  at the competitors.
"""

from pathlib import Path

import torch
from pydantic import BaseModel, Field
from torch import Tensor

from neurotrace.lab.benchmark.planted_model import COUNTRIES, PlantedModel, build_planted
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.seeding import make_generator
from neurotrace.lab.tracing import (
    PreparedFact,
    TraceRequest,
    noise_hook,
    prepare_fact,
    run_trace,
    subject_noise_std,
)

NOISY_RUNS = 32


class PlantedCheck(BaseModel):
    method: str = Field(description="The method and what it scores.")
    points_to: str = Field(description="Where the method's top score is (site, position, token).")
    correct: bool = Field(description="Whether that is the planted site (for neurons: on every fact).")
    run_id: str | None = Field(None, description="The trace run this check read, if any.")


def _trace_checks(lab: Lab, pm: PlantedModel, mode: str, seed: int, reporter: Reporter) -> list[PlantedCheck]:
    req = TraceRequest(models=[str(pm.path)], facts=list(pm.facts), components=["mlp"], window=1, mode=mode,
                       heads=mode == "exact", seed=seed, corruption={"kind": "noise", "samples": 10})
    result = run_trace(req, lab=lab, reporter=Reporter(cancel_event=reporter.cancel_event))  # cancellable, quiet
    facts = lab.store.read_json(result.run_id, "trace_results.json")["models"][str(pm.path)]["facts"]
    grid = torch.tensor([f["indirect"]["mlp"] for f in facts]).mean(0)          # (layer, pos)
    layer, pos = divmod(int(grid.argmax()), grid.shape[1])
    checks = [PlantedCheck(method=f"trace {mode} (restore one MLP output)", run_id=result.run_id,
                           points_to=f"MLP layer {layer}, position {pos} ({facts[0]['tokens'][pos]!r})",
                           correct=(layer, pos) == (pm.mlp_layer, pm.subject_last_pos))]
    if mode == "exact":
        heads = torch.tensor([f["heads"] for f in facts]).mean(0)                 # (layer, head)
        layer, head = divmod(int(heads.argmax()), heads.shape[1])
        checks.append(PlantedCheck(method="head patching (trace heads=True: restore one head at the final "
                                   "position)", run_id=result.run_id, points_to=f"layer {layer}, head {head}",
                                   correct=(layer, head) == (pm.head_layer, pm.head)))
    return checks


def _sites(lm: LoadedModel) -> list[str]:
    return [site_name(kind, layer) for kind in ("mlp_out", "attn_out") for layer in range(lm.n_layers)]


def _neuron_sites(lm: LoadedModel) -> list[str]:
    return [site_name("mlp_post", layer) for layer in range(lm.n_layers)]


def _forward(lm: LoadedModel, ids: Tensor, embed_fn, sites: list[str], prep: PreparedFact):
    """p(target) per row with ``embed_fn`` on the embeddings; the activations at ``sites``."""
    acts: dict[str, Tensor] = {}

    def save(act: Tensor, site: str) -> None:
        if act.requires_grad:
            act.retain_grad()
        acts[site] = act

    body = lm.adapter.module(lm.model, lm.adapter.base)
    with hooked(lm.model, lm.adapter, {"hook_embed": embed_fn, **{s: save for s in sites}}):
        h = body(input_ids=ids).last_hidden_state
    p = torch.softmax(lm.adapter.logits_at(lm.model, h[:, prep.predict_pos]), -1)[:, prep.target_id]
    return p, acts


def _noisy(lm: LoadedModel, prep: PreparedFact, std: float, seed: int, sites: list[str]):
    """NOISY_RUNS runs with subject noise of graded strength (0..3 x the embedding std, uniform), so the
    planted unit fires in some runs and not in others: observational data for correlation."""
    g = make_generator(seed)
    scale = torch.rand((NOISY_RUNS, 1, 1), generator=g) * 3 * std
    noise = torch.randn((NOISY_RUNS, 1, lm.d_model), generator=g) * scale
    with torch.no_grad():
        return _forward(lm, prep.ids[None].expand(NOISY_RUNS, -1), noise_hook(noise, prep.subject), sites, prep)


def _clean_grads(lm: LoadedModel, prep: PreparedFact, sites: list[str]) -> dict[str, Tensor]:
    def leaf(act: Tensor, site: str) -> Tensor:
        return act.detach().clone().requires_grad_(True)

    with torch.enable_grad():
        p, acts = _forward(lm, prep.ids[None], leaf, sites, prep)
        p.sum().backward()
    return {s: acts[s].grad[0] for s in sites}                                # (pos, width)


def _abs_corr(x: Tensor, y: Tensor) -> Tensor:
    """|Pearson r| of each column of x (runs, ...) with y (runs,)."""
    xc, yc = x - x.mean(0), y - y.mean()
    num = (xc * yc.view(-1, *[1] * (x.dim() - 1))).sum(0)
    return (num / (xc.norm(dim=0) * yc.norm()).clamp_min(1e-12)).abs()


def _component_checks(lm: LoadedModel, pm: PlantedModel, preps: list[PreparedFact], std: float,
                      seed: int, reporter: Reporter) -> list[PlantedCheck]:
    sites = _sites(lm)
    corr, grad = 0, 0
    for i, prep in enumerate(preps):
        reporter.check()
        p, acts = _noisy(lm, prep, std, seed * 101 + i, sites)
        corr = corr + _abs_corr(torch.stack([acts[s].norm(dim=-1) for s in sites], 1), p)   # (site, pos)
        g = _clean_grads(lm, prep, sites)
        grad = grad + torch.stack([g[s].norm(dim=-1) for s in sites])                      # (site, pos)
    target = (sites.index(site_name("mlp_out", pm.mlp_layer)), pm.subject_last_pos)
    return [_point("correlation (|corr(component output norm, p)| over graded-noise runs)", corr, sites, target, preps[0]),
            _point("gradient (|dp/d component output| on clean runs)", grad, sites, target, preps[0])]


def _point(method: str, scores: Tensor, sites: list[str], target: tuple[int, int], prep) -> PlantedCheck:
    scores = torch.nan_to_num(scores)
    i, pos = divmod(int(scores.argmax()), scores.shape[1])
    ties = int((scores == scores.max()).sum()) - 1
    note = f" (tied with {ties} other cells)" if ties else ""
    return PlantedCheck(method=method, points_to=f"{sites[i]} at position {pos} ({prep.tokens[pos]!r}){note}",
                        correct=(i, pos) == target and not ties)


def _neuron_checks(lm: LoadedModel, pm: PlantedModel, preps: list[PreparedFact], std: float,
                   seed: int, reporter: Reporter) -> list[PlantedCheck]:
    """Per fact, the top (layer, position, neuron) by each method vs the fact's planted neuron."""
    sites = _neuron_sites(lm)
    found: dict[str, list[tuple[tuple[int, ...], int]]] = {"correlation": [], "gradient": []}
    for i, prep in enumerate(preps):
        reporter.check()
        p, acts = _noisy(lm, prep, std, seed * 101 + i, sites)
        corr = _abs_corr(torch.stack([acts[s] for s in sites], 1), p)           # (layer, pos, neuron)
        g = _clean_grads(lm, prep, sites)
        grad = torch.stack([g[s].abs() for s in sites])                          # (layer, pos, neuron)
        for name, scores in (("correlation", corr), ("gradient", grad)):
            scores = torch.nan_to_num(scores)
            flat = int(scores.argmax())
            top = tuple(int(v) for v in torch.unravel_index(torch.tensor(flat), scores.shape))
            found[name].append((top, int((scores == scores.max()).sum()) - 1))
    planted = [(pm.mlp_layer, pm.subject_last_pos, COUNTRIES.index(f.clean_subject)) for f in pm.facts]
    out = []
    for name, what in (("correlation", "|corr(neuron, p)| over graded-noise runs"), ("gradient", "|dp/d neuron| on clean runs")):
        hits = sum(top == want and not ties for (top, ties), want in zip(found[name], planted, strict=True))
        (first, ties) = found[name][0]
        where = f"layer {first[0]}, position {first[1]}, neuron {first[2]}" + (
            f" (tied with {ties} other neurons)" if ties else "")
        out.append(PlantedCheck(method=f"{name} over MLP neurons ({what})", correct=hits == len(planted),
                                points_to=f"the planted neuron on {hits}/{len(planted)} facts; for "
                                f"{pm.facts[0].clean_subject!r}: {where} (planted: layer {planted[0][0]}, "
                                f"position {planted[0][1]}, neuron {planted[0][2]})"))
    return out


def planted_checks(lab: Lab, model_dir: Path, seed: int, reporter: Reporter = NULL_REPORTER
                   ) -> tuple[PlantedModel, list[PlantedCheck]]:
    """Build the planted model in ``model_dir`` and run every check on it."""
    pm = build_planted(model_dir)
    reporter.check()
    checks = _trace_checks(lab, pm, "exact", seed, reporter)
    reporter.check()
    checks += _trace_checks(lab, pm, "approx", seed, reporter)
    reporter.check()
    with lab.cache.lease(ModelRef(model=str(pm.path))) as lm:
        preps = [prepare_fact(lm, f, i) for i, f in enumerate(pm.facts)]
        std = subject_noise_std(lm, preps)
        checks += (_component_checks(lm, pm, preps, std, seed, reporter)
                   + _neuron_checks(lm, pm, preps, std, seed, reporter))
    lab.cache.release(str(pm.path))
    return pm, checks
