"""One model's averages over facts and its localisation readings: what the summary is allowed to say.

* **Half-maximum ranges**: per component and token category, the layers whose average indirect effect is
  at least half that curve's maximum (a flat stretch is a range, not a peak), with n and the band.
* **Hand-off**: the first layer where restoring the residual at the scored token recovers more than at
  the last subject token (after the subject token led): where the information has moved.
* **Arrival**: the first layer where restoring the residual at the scored position recovers half the
  total effect (mean p_clean - p_corrupted): where the answer arrives there. Restoring it at the last
  layer gives back the clean run by construction; the informative number is this layer.
* **Layer-0 artifact**: under noise, restoring a window that contains layer 0 also restores the
  embedding-level signal the noise destroyed; a peak that only such windows reach is flagged.
* **Layer-0 embedding**: under any corruption, an MLP effect at the subject's tokens that only windows
  containing layer 0 reach, with nothing after it (every later window below half of it), is MLP0 acting
  as an extended embedding (detokenising the subject's tokens), not storage; it is flagged.
* **Context**: below ``MIN_EFFECT`` the context swap has no measurable effect, and no layer is named.

*Averages* (mean, n and ROME's 95% band per token category). Default convention: every position has exactly one :class:`TokenCategory`; a fact contributes one row
per category it has (the mean over its positions there), and a category's average is over the facts
that have it - so its ``n`` can be smaller than the number of facts, and is reported.

``rome_compat`` uses ROME's buckets (``average_causal_effects`` notebook): first, middle and last
subject token, first subsequent token, further tokens, last token. They may overlap (a one-token
subject is both first and last; a subject right before the last token makes the first subsequent token
the last token), and the middle and further buckets add one row per *token* (ROME's ``add_all``).
The band is t sd / sqrt(n), t the 97.5% Student-t quantile with n - 1 degrees of freedom and the sample sd
(n = 2 facts give t = 12.7, not 1.96); under rome_compat ROME's 1.96 x population sd.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from neurotrace.lab.tracing.prepare import PreparedFact
from neurotrace.lab.tracing.schema import (
    CATEGORY_LABELS,
    ROME_BUCKETS,
    ApproxCheck,
    ContextReading,
    FactRecord,
    HeadEffect,
    LayerRange,
    ModelRecord,
    PeakSite,
    Readings,
    SkippedFact,
    SubjectTokenReading,
    TokenCategory,
    TraceRequest,
)

# -- token categories and averages ----------------------------------------------------------

def categories(prep: PreparedFact) -> list[TokenCategory]:
    """The token category of each position of a prepared fact."""
    s, e, last = prep.subject[0], prep.subject[1], prep.predict_pos
    return [category(p, s, e, last) for p in range(len(prep.ids))]


def category(p: int, s: int, e: int, last: int) -> TokenCategory:
    if p == last:
        return TokenCategory.SCORED
    if p > last:
        return TokenCategory.AFTER_SCORED
    if p < s:
        return TokenCategory.BEFORE_SUBJECT
    if p == e - 1:
        return TokenCategory.LAST_SUBJECT
    if p == s:
        return TokenCategory.FIRST_SUBJECT
    if p < e:
        return TokenCategory.MIDDLE_SUBJECT
    return TokenCategory.FIRST_SUBSEQUENT if p == e else TokenCategory.FURTHER


def bucket_labels(rome: bool) -> list[str]:
    return list(ROME_BUCKETS if rome else CATEGORY_LABELS)


def scored_bucket(rome: bool) -> int:
    return ROME_BUCKETS.index("last token") if rome else int(TokenCategory.SCORED)


def last_subject_bucket(rome: bool) -> int:
    return (ROME_BUCKETS if rome else CATEGORY_LABELS).index("last subject token")


def fact_rows(grid: Tensor, cats: Sequence[int], subject: Sequence[int], predict_pos: int,
              rome: bool) -> list[list[Tensor]]:
    """For one fact's (layer, pos) grid: per bucket, the (layer,) rows it contributes."""
    if not rome:
        idx = torch.tensor([int(c) for c in cats])
        return [[grid[:, idx == c].mean(1)] if bool((idx == c).any()) else [] for c in range(len(CATEGORY_LABELS))]
    b, e, last = subject[0], subject[1], predict_pos
    cols = [[b], list(range(b + 1, e - 1)), [e - 1], [e] if e <= last else [], list(range(e + 1, last)), [last]]
    return [[grid[:, p] for p in ps] for ps in cols]


#: 97.5% quantiles of Student's t, 1..30 degrees of freedom
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (a table to 30, then the
    Cornish-Fisher expansion, within 1e-3); 1.96 for df < 1 (no spread to scale)."""
    if df < 1:
        return 1.96
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass
class Average:
    mean: Tensor     # (layer, bucket), nan where no rows
    band: Tensor     # (layer, bucket) 95% half-width (t_975(n-1) sd / sqrt(n)), nan where no rows
    n: list[int]     # rows per bucket


def average(per_fact: Sequence[list[list[Tensor]]], n_layers: int, n_buckets: int, rome: bool) -> Average:
    """Average the rows of every fact per bucket."""
    mean = torch.full((n_layers, n_buckets), float("nan"))
    band = torch.full((n_layers, n_buckets), float("nan"))
    n = []
    for c in range(n_buckets):
        rows = [r for fact in per_fact for r in fact[c]]
        n.append(len(rows))
        if not rows:
            continue
        stack = torch.stack(rows).double()                                   # (rows, layer)
        mean[:, c] = stack.mean(0).float()
        sd = stack.std(0, correction=0 if rome else 1) if len(rows) > 1 else torch.zeros(n_layers, dtype=torch.float64)
        band[:, c] = ((1.96 if rome else t975(len(rows) - 1)) * sd / len(rows) ** 0.5).float()
    return Average(mean, band, n)


# -- readings -------------------------------------------------------------------------------

MIN_EFFECT = 0.02          # p(target) units: smaller average effects are reported as none
UNDER, OVER = 0.67, 1.5    # approx / exact magnitude ratios beyond which approx under/over-estimates
TOP_HEADS = 3


def layer_range(component: str, label: str, curve: torch.Tensor, band: torch.Tensor, n: int) -> LayerRange | None:
    """The half-maximum layer range of one (layer,) curve, or None below MIN_EFFECT."""
    if n == 0 or bool(torch.isnan(curve).all()):
        return None
    top = int(torch.nan_to_num(curve, nan=-1e9).argmax())
    peak = float(curve[top])
    if peak < MIN_EFFECT:
        return None
    above = [i for i, v in enumerate(curve.tolist()) if v >= peak / 2]
    return LayerRange(component=component, position=label, first=above[0], last=above[-1], max_layer=top, max_effect=peak,
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
    cands = [r for r in found if not (r.component == "resid" and r.position in trivial)]
    if not cands:
        return None
    r = max(cands, key=lambda r: r.max_effect)
    return PeakSite(component=r.component, layer=r.max_layer, position=r.position, effect=r.max_effect, band=r.band, n=r.n,
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
    return [k for k in ("mlp", "attn") if k in avgs and layer0_only(avgs[k].mean, window)]


SUBJECT_CATEGORIES = ("first subject token", "middle subject tokens", "last subject token")


def layer0_only(curves: torch.Tensor, window: int) -> bool:
    """Whether the maximum of (layer, column) ``curves`` is >= MIN_EFFECT, reached by a window that contains
    layer 0, and every window that does not contain layer 0 stays below half of it."""
    m = torch.nan_to_num(curves, nan=-1e9)
    if m.numel() == 0:
        return False
    top, layer = float(m.max()), int(m.max(1).values.argmax())
    reach0 = [x for x in range(m.shape[0]) if x - window // 2 <= 0]
    rest = m[[x for x in range(m.shape[0]) if x not in reach0]]
    return top >= MIN_EFFECT and layer in reach0 and (rest.numel() == 0 or float(rest.max()) < top / 2)


def layer0_embedding(avgs: dict[str, Average], labels: Sequence[str], window: int) -> list[str]:
    """['mlp'] when the MLP effect at the subject's tokens is reached only by windows containing layer 0
    (MLP0 as an extended embedding: detokenisation, not storage), whatever the corruption."""
    cols = [c for c, label in enumerate(labels) if label in SUBJECT_CATEGORIES]
    if "mlp" not in avgs or not cols:
        return []
    return ["mlp"] if layer0_only(avgs["mlp"].mean[:, cols], window) else []


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


def subject_tokens(known: Sequence[FactRecord], components: Sequence[str]) -> list[SubjectTokenReading]:
    """Per component (mlp, resid): in how many facts the largest effect over the subject's tokens (any
    layer) sits at the last subject token; the others' peak tokens."""
    out = []
    for k in (c for c in ("mlp", "resid") if c in components):
        n, at_last, earlier = 0, 0, []
        for f in known:
            s, e = f.subject_range
            if e - s < 2:
                continue
            grid = torch.tensor(f.indirect[k])[:, s:e]                          # (layer, subject token)
            if float(grid.max()) < MIN_EFFECT:
                continue
            n += 1
            pos = s + int(grid.max(0).values.argmax())
            if pos == e - 1:
                at_last += 1
            else:
                earlier.append(f"{f.fact_id or f.subject}: {f.tokens[pos]!r}")
        if n:
            out.append(SubjectTokenReading(component=k, n_facts=n, at_last=at_last, earlier=earlier[:5]))
    return out


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
    """Agreement of approx with exact patching on the sampled cells, pooled over facts, per component."""
    out = []
    components = {k for f in facts if f.approx_check for k in f.approx_check}
    for k in sorted(components):
        a = torch.tensor([v for f in facts if f.approx_check and k in f.approx_check for v in f.approx_check[k]["approx"]])
        e = torch.tensor([v for f in facts if f.approx_check and k in f.approx_check for v in f.approx_check[k]["exact"]])
        rho = float(torch.corrcoef(torch.stack([_ranks(a), _ranks(e)]))[0, 1]) if len(a) > 2 and a.std() > 0 and e.std() > 0 else None
        denom = float(e.abs().sum())
        ratio = float(a.abs().sum()) / denom if denom > 1e-9 else None
        verdict = ("unclear" if ratio is None else "underestimates" if ratio < UNDER
                   else "overestimates" if ratio > OVER else "agrees")
        out.append(ApproxCheck(component=k, cells=len(a), spearman=rho, magnitude_ratio=ratio, verdict=verdict))
    return out


# -- one model's record ----------------------------------------------------------------------

@dataclass
class ModelInfo:
    """What the summary needs to know about a model once it is no longer leased."""

    model: str
    lm_kind: str
    family: str
    n_layers: int
    n_heads: int | None
    fingerprint: str
    window: int
    noise_std: float | None
    noise_std_from: str


def _curves_mean(known: Sequence[FactRecord]) -> dict[str, list[float]]:
    out = {}
    for key in ("scored_patch", "subject_patch", "context_patch"):
        rows = [getattr(f.curves, key) for f in known if getattr(f.curves, key) is not None]
        if rows:
            out[key] = torch.tensor(rows).mean(0).tolist()
    return out


def summarize_model(request: TraceRequest, info: ModelInfo, facts: Sequence[FactRecord],
                    skipped: Sequence[SkippedFact]) -> ModelRecord:
    """Averages over the known facts, their readings, and the model's record for trace_results.json."""
    rome = request.rome_compat
    labels = bucket_labels(rome)
    known = [f for f in facts if f.correct]
    avgs = {}
    for k in request.components:
        rows = [fact_rows(torch.tensor(f.indirect[k]), f.categories, f.subject_range, f.predict_pos, rome)
                for f in known]
        avgs[k] = average(rows, info.n_layers, len(labels), rome)
    total = (sum(f.p_clean - f.p_corrupted for f in known) / len(known)) if known else 0.0
    found = ranges(avgs, labels) if known else []
    readings = Readings(
        buckets=labels, bucket_n=next(iter(avgs.values())).n if avgs else [], min_effect=MIN_EFFECT,
        ranges=found, handoff_layer=handoff_layer(avgs, rome) if known else None,
        arrival_layer=arrival_layer(avgs, rome, total) if known else None,
        layer0_artifact=layer0_artifacts(avgs, info.window, request.corruption.kind == "noise") if known else [],
        layer0_embedding=layer0_embedding(avgs, labels, info.window) if known else [],
        context=context(known), top_heads=top_heads(known), approx=approx_checks(facts),
        subject_tokens=subject_tokens(known, request.components))
    n = max(len(facts), 1)
    return ModelRecord(
        model=info.model, lm_kind=info.lm_kind, family=info.family, n_layers=info.n_layers, n_heads=info.n_heads,
        fingerprint=info.fingerprint, window=info.window, noise_std=info.noise_std,
        noise_std_from=info.noise_std_from, facts=list(facts), skipped=list(skipped),
        aie={k: a.mean.tolist() if known else [] for k, a in avgs.items()},
        aie_band={k: a.band.tolist() if known else [] for k, a in avgs.items()}, categories=labels,
        peak=peak(found, rome), readings=readings, curves_mean=_curves_mean(known), n_known=len(known),
        unknown_facts=[f.fact_id or f.subject for f in facts if not f.correct] + [s.fact_id for s in skipped
                                                                                 if s.unknown],
        mean_p_clean=sum(f.p_clean for f in facts) / n, mean_p_corrupted=sum(f.p_corrupted for f in facts) / n,
        mean_p_clean_known=sum(f.p_clean for f in known) / len(known) if known else None,
        mean_p_corrupted_known=sum(f.p_corrupted for f in known) / len(known) if known else None,
        notes=sorted({note for f in facts for note in f.notes}))
