"""The planted part of the benchmark: do trace, head patching, correlation and gradients find the route?"""

from pathlib import Path

import torch

from neurotrace.lab.adapters import site_name
from neurotrace.lab.benchmark import PlantedCheck
from neurotrace.lab.hooks import hooked
from neurotrace.lab.lab import Lab
from neurotrace.lab.models import ModelRef
from neurotrace.lab.planted import PlantedModel, build_planted
from neurotrace.lab.progress import Reporter
from neurotrace.lab.seeding import make_generator
from neurotrace.lab.tracing import TraceRequest, run_trace
from neurotrace.lab.tracing_core import prepare_fact, subject_noise_std
from neurotrace.lab.tracing_grid import Corrupted, head_grid

KINDS = ("mlp", "attn")


def _trace_check(lab: Lab, pm: PlantedModel, mode: str, seed: int) -> PlantedCheck:
    req = TraceRequest(models=[str(pm.path)], facts=list(pm.facts), kinds=["mlp"], window=1, mode=mode, seed=seed,
                       corruption={"kind": "noise", "samples": 10})
    result = run_trace(req, lab=lab, reporter=Reporter())
    facts = lab.store.read_json(result.run_id, "trace_results.json")["models"][str(pm.path)]["facts"]
    grid = torch.tensor([f["indirect"]["mlp"] for f in facts]).mean(0)          # (layer, pos)
    layer, pos = divmod(int(grid.argmax()), grid.shape[1])
    ok = (layer, pos) == (pm.mlp_layer, pm.subject_last_pos)
    return PlantedCheck(method=f"trace ({mode}, restore mlp)", points_to=f"MLP layer {layer}, position {pos}"
                        f" ({facts[0]['tokens'][pos]!r}); run {result.run_id}", correct=ok)


def _sites(lm) -> list[tuple[str, int]]:
    return [(site_name({"mlp": "mlp_out", "attn": "attn_out"}[k], layer), layer) for k in KINDS
            for layer in range(lm.n_layers)]


def _correlation_and_gradient(lm, pm: PlantedModel, seed: int) -> list[PlantedCheck]:
    """Correlation of each site's activation norm with p(target) over noisy runs; gradient saliency
    |dp/d activation| on clean runs. Both over (component, layer, position)."""
    sites = [s for s, _ in _sites(lm)]
    preps = [prepare_fact(lm, f, i) for i, f in enumerate(pm.facts)]
    std = subject_noise_std(lm, preps)
    norms, probs, grads = [], [], torch.zeros(len(sites), len(preps[0].ids))
    body = lm.adapter.module(lm.model, lm.adapter.base)
    for i, prep in enumerate(preps):
        g = make_generator(seed * 101 + i)
        noise = torch.randn((32, 1, lm.d_model), generator=g) * 3 * std
        store: dict[str, torch.Tensor] = {}

        def add(act, site, noise=noise, prep=prep):
            out = act.clone()
            out[:, prep.subject[0]:prep.subject[1]] += noise
            return out

        def save(act, site, store=store):
            act.retain_grad() if act.requires_grad else None
            store[site] = act

        with torch.no_grad(), hooked(lm.model, lm.adapter, {"hook_embed": add, **{s: save for s in sites}}):
            h = body(input_ids=prep.ids[None].expand(32, -1)).last_hidden_state
        p = torch.softmax(lm.adapter.logits_at(lm.model, h[:, prep.predict_pos]), -1)[:, prep.target_id]
        norms.append(torch.stack([store[s].norm(dim=-1) for s in sites], 1))      # (32, site, pos)
        probs.append(p)
        grads += _clean_gradients(lm, prep, sites)
    x, y = torch.cat(norms), torch.cat(probs)
    xc, yc = x - x.mean(0), y - y.mean()
    corr = ((xc * yc[:, None, None]).sum(0) / (xc.norm(dim=0) * yc.norm()).clamp_min(1e-12)).abs()
    return [_point("correlation (|corr(site norm, p)|, noisy runs)", corr, sites, pm, preps[0]),
            _point("gradient (|dp/d site| on clean runs)", grads, sites, pm, preps[0])]


def _clean_gradients(lm, prep, sites: list[str]) -> torch.Tensor:
    acts: dict[str, torch.Tensor] = {}

    def embed(act, site):
        return act.detach().clone().requires_grad_(True)

    def save(act, site):
        act.retain_grad()
        acts[site] = act

    body = lm.adapter.module(lm.model, lm.adapter.base)
    with torch.enable_grad(), hooked(lm.model, lm.adapter, {"hook_embed": embed, **{s: save for s in sites}}):
        h = body(input_ids=prep.ids[None]).last_hidden_state
        torch.softmax(lm.adapter.logits_at(lm.model, h[:, prep.predict_pos]), -1)[0, prep.target_id].backward()
    return torch.stack([acts[s].grad[0].norm(dim=-1) for s in sites])             # (site, pos)


def _point(method: str, scores: torch.Tensor, sites: list[str], pm: PlantedModel, prep) -> PlantedCheck:
    i, pos = divmod(int(torch.nan_to_num(scores).argmax()), scores.shape[1])
    ok = sites[i] == site_name("mlp_out", pm.mlp_layer) and pos == pm.subject_last_pos
    return PlantedCheck(method=method, points_to=f"{sites[i]} at position {pos} ({prep.tokens[pos]!r})", correct=ok)


def planted_checks(lab: Lab, tmp: str, seed: int) -> list[PlantedCheck]:
    pm = build_planted(Path(tmp) / "planted-gpt2")
    ref = ModelRef(model=str(pm.path))
    checks = [_trace_check(lab, pm, "exact", seed), _trace_check(lab, pm, "approx", seed)]
    with lab.cache.lease(ref) as lm:
        heads = []
        for i, f in enumerate(pm.facts):
            prep = prepare_fact(lm, f, i)
            noise = torch.randn((10, 1, lm.d_model), generator=make_generator(seed + i)) * 3 * subject_noise_std(lm, [prep])
            heads.append(head_grid(lm, prep, Corrupted(prep.ids, noise, prep.subject)))
        grid = torch.stack(heads).mean(0)
        layer, head = divmod(int(grid.argmax()), grid.shape[1])
        checks.append(PlantedCheck(method="head patching (restore one head at the final position)",
                                   points_to=f"layer {layer}, head {head}",
                                   correct=(layer, head) == (pm.head_layer, pm.head)))
        checks += _correlation_and_gradient(lm, pm, seed)
    lab.cache.release(str(pm.path))
    return checks
