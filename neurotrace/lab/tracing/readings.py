"""The localisation readings of one model, from its averages: what the summary is allowed to say.

* **Half-maximum ranges**: per kind and token category, the layers whose average indirect effect is
  at least half that curve's maximum (a flat stretch is a range, not a peak), with n and the band.
* **Hand-off**: the first layer where restoring the residual at the scored token recovers more than at
  the last subject token (after the subject token led): where the information has moved.
* **Arrival**: the first layer where restoring the residual at the scored position recovers half the
  total effect (mean p_clean - p_corrupted): where the answer arrives there. Restoring it at the last
  layer gives back the clean run by construction; the informative number is this layer.
* **Layer-0 artifact**: under noise, restoring a window that contains layer 0 also restores the
  embedding-level signal the noise destroyed; a peak that only such windows reach is flagged.
* **Context**: below ``MIN_EFFECT`` the context swap has no measurable effect, and no layer is named.
"""

from collections.abc import Sequence

import torch

from neurotrace.lab.tracing.buckets import Average, last_subject_bucket, scored_bucket
from neurotrace.lab.tracing.schema import (
    ApproxCheck,
    ContextReading,
    FactRecord,
    HeadEffect,
    LayerRange,
    PeakSite,
)

MIN_EFFECT = 0.02          # p(target) units: smaller average effects are reported as none
UNDER, OVER = 0.67, 1.5    # approx / exact magnitude ratios beyond which approx under/over-estimates
TOP_HEADS = 3


def layer_range(kind: str, label: str, curve: torch.Tensor, band: torch.Tensor, n: int) -> LayerRange | None:
    """The half-maximum layer range of one (layer,) curve, or None below MIN_EFFECT."""
    if n == 0 or bool(torch.isnan(curve).all()):
        return None
    top = int(torch.nan_to_num(curve, nan=-1e9).argmax())
    peak = float(curve[top])
    if peak < MIN_EFFECT:
        return None
    above = [i for i, v in enumerate(curve.tolist()) if v >= peak / 2]
    return LayerRange(kind=kind, position=label, first=above[0], last=above[-1], max_layer=top, max_effect=peak,
                      band=float(band[top]), n=n)


def ranges(avgs: dict[str, Average], labels: Sequence[str]) -> list[LayerRange]:
    out = []
    for k, avg in avgs.items():
        for c, label in enumerate(labels):
            r = layer_range(k, label, avg.mean[:, c], avg.band[:, c], avg.n[c])
            if r is not None:
                out.append(r)
    return out


def peak(found: Sequence[LayerRange], rome: bool) -> PeakSite | None:
    """The largest effect, leaving out the resid at (and after) the scored position (the output itself)."""
    trivial = {"last token"} if rome else {"scored token", "after scored token"}
    cands = [r for r in found if not (r.kind == "resid" and r.position in trivial)]
    if not cands:
        return None
    r = max(cands, key=lambda r: r.max_effect)
    return PeakSite(kind=r.kind, layer=r.max_layer, position=r.position, effect=r.max_effect, band=r.band, n=r.n,
                    first=r.first, last=r.last)


def handoff_layer(avgs: dict[str, Average], rome: bool) -> int | None:
    if "resid" not in avgs:
        return None
    m = avgs["resid"].mean
    subj, scored = m[:, last_subject_bucket(rome)].tolist(), m[:, scored_bucket(rome)].tolist()
    led = False
    for layer, (a, b) in enumerate(zip(subj, scored, strict=True)):
        if a != a or b != b:
            return None
        if a > b and a >= MIN_EFFECT:
            led = True
        elif led and b >= a:
            return layer
    return None


def arrival_layer(avgs: dict[str, Average], rome: bool, total_effect: float) -> int | None:
    if "resid" not in avgs or total_effect < MIN_EFFECT:
        return None
    curve = avgs["resid"].mean[:, scored_bucket(rome)].tolist()
    return next((layer for layer, v in enumerate(curve) if v >= total_effect / 2), None)


def layer0_artifacts(avgs: dict[str, Average], window: int, noise: bool) -> list[str]:
    """Kinds (mlp/attn) whose maximum is reached only by windows that contain layer 0, under noise."""
    if not noise:
        return []
    out = []
    for k in ("mlp", "attn"):
        if k not in avgs:
            continue
        m = torch.nan_to_num(avgs[k].mean, nan=-1e9)                      # (layer, bucket)
        top = float(m.max())
        layer = int(m.max(1).values.argmax())
        reach0 = [layer_ for layer_ in range(m.shape[0]) if layer_ - window // 2 <= 0]
        rest = m[[x for x in range(m.shape[0]) if x not in reach0]]
        if top >= MIN_EFFECT and layer in reach0 and (rest.numel() == 0 or float(rest.max()) < top / 2):
            out.append(k)
    return out


def context(known: Sequence[FactRecord]) -> ContextReading | None:
    rows = [f.curves for f in known if f.curves.context_patch is not None]
    if not rows:
        return None
    effect = sum(c.context_clean_minus_corrupt for c in rows) / len(rows)
    if effect < MIN_EFFECT:
        return ContextReading(effect=effect, until_layer=None, measurable=False)
    p_ctx = sum(c.context_p_corrupted for c in rows) / len(rows)
    curve = torch.tensor([c.context_patch for c in rows]).mean(0).tolist()
    until = max((i for i, v in enumerate(curve) if v >= p_ctx + effect / 2), default=None)
    return ContextReading(effect=effect, until_layer=until, measurable=True)


def top_heads(known: Sequence[FactRecord]) -> list[HeadEffect]:
    rows = [torch.tensor(f.heads) - f.p_corrupted for f in known if f.heads is not None]
    if not rows:
        return []
    mean = torch.stack(rows).mean(0)                                        # (layer, head)
    order = mean.flatten().argsort(descending=True)[:TOP_HEADS].tolist()
    return [HeadEffect(layer=i // mean.shape[1], head=i % mean.shape[1], effect=float(mean.flatten()[i]))
            for i in order]


def _ranks(x: torch.Tensor) -> torch.Tensor:
    return x.argsort().argsort().double()


def approx_checks(facts: Sequence[FactRecord]) -> list[ApproxCheck]:
    """Agreement of approx with exact patching on the sampled cells, pooled over facts, per kind."""
    out = []
    kinds = {k for f in facts if f.approx_check for k in f.approx_check}
    for k in sorted(kinds):
        a = torch.tensor([v for f in facts if f.approx_check and k in f.approx_check for v in f.approx_check[k]["approx"]])
        e = torch.tensor([v for f in facts if f.approx_check and k in f.approx_check for v in f.approx_check[k]["exact"]])
        rho = float(torch.corrcoef(torch.stack([_ranks(a), _ranks(e)]))[0, 1]) if len(a) > 2 and a.std() > 0 and e.std() > 0 else None
        denom = float(e.abs().sum())
        ratio = float(a.abs().sum()) / denom if denom > 1e-9 else None
        verdict = ("unclear" if ratio is None else "underestimates" if ratio < UNDER
                   else "overestimates" if ratio > OVER else "agrees")
        out.append(ApproxCheck(kind=k, cells=len(a), spearman=rho, magnitude_ratio=ratio, verdict=verdict))
    return out
