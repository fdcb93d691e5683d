"""compare across a tuned pair: per-fact differences at the same positions.

A tuned pair is two trace entries of one base (``B`` and ``B+adapter``, or ``B+a1`` and ``B+a2``), or any
two entries with one depth whose facts tokenize identically (a base and its tuned copy share the
tokenizer). Their grids then line up cell by cell (same layers, same positions), so each fact has a
difference ``tuned - base`` of its indirect effect at each (component, layer, position) and of its
p(target). Reported per fact at the pair's reference site (the tuned entry's largest average effect:
component, token category, layer) with the 95% band over facts (Student t, as the AIE bands).
"""

from typing import Any

import torch

from neurotrace.lab.model.weights.lora import split
from neurotrace.lab.tracing.readings import t975
from neurotrace.lab.tracing.schema import CATEGORY_LABELS, ModelRecord, TokenCategory


def is_tuned_pair(a: ModelRecord, b: ModelRecord) -> bool:
    """Same base (by name), or same depth with identically tokenized facts."""
    same_base = split(a.model.split(" (")[0])[0] == split(b.model.split(" (")[0])[0]
    aligned = a.n_layers == b.n_layers and len(a.facts) == len(b.facts) and all(
        fa.tokens == fb.tokens for fa, fb in zip(a.facts, b.facts, strict=True))
    return aligned and (same_base or a.fingerprint != b.fingerprint)


def _cell(fact: Any, component: str, category: str, layer: int) -> float:
    """The fact's largest indirect effect at ``layer`` over its positions of ``category`` (0 if none)."""
    grid = fact.indirect.get(component)
    if not grid:
        return 0.0
    if category == "last token":                                     # ROME's bucket name of the scored token
        category = CATEGORY_LABELS[TokenCategory.SCORED]
    cols = [p for p, c in enumerate(fact.categories) if CATEGORY_LABELS[int(c)] == category]
    return max((grid[layer][p] for p in cols), default=0.0)


def pair_differences(base: ModelRecord, tuned: ModelRecord) -> dict[str, Any] | None:
    """Per-fact tuned - base at the tuned entry's peak site, with the band over facts; None when no site."""
    if tuned.peak is None or not is_tuned_pair(base, tuned):
        return None
    site = tuned.peak
    rows = []
    for fb, ft in zip(base.facts, tuned.facts, strict=True):
        eb = _cell(fb, site.component, site.position, site.layer)
        et = _cell(ft, site.component, site.position, site.layer)
        rows.append({"fact": ft.fact_id or ft.prompt, "prompt": ft.prompt, "target": ft.target,
                     "base_effect": round(eb, 4), "tuned_effect": round(et, 4), "difference": round(et - eb, 4),
                     "base_p_clean": round(fb.p_clean, 4), "tuned_p_clean": round(ft.p_clean, 4),
                     "p_difference": round(ft.p_clean - fb.p_clean, 4)})
    d = torch.tensor([r["difference"] for r in rows], dtype=torch.float64)
    n = len(rows)
    band = float(t975(n - 1) * d.std() / n ** 0.5) if n > 1 else 0.0
    return {"base": base.model, "tuned": tuned.model, "component": site.component, "position": site.position,
            "layer": site.layer, "mean_difference": round(float(d.mean()), 4), "band": round(band, 4), "n": n,
            "facts": rows}


def pair_line(diff: dict[str, Any]) -> str:
    lo, hi = diff["mean_difference"] - diff["band"], diff["mean_difference"] + diff["band"]
    verdict = ("the tuned model relies on this site more" if lo > 0 else "the base relies on it more" if hi < 0
               else "no difference beyond the band")
    return (f"Tuned pair ({diff['tuned']} vs {diff['base']}, same tokenizer, same positions): at "
            f"{diff['component']} / {diff['position']} / layer {diff['layer']} the per-fact indirect effect differs "
            f"by {diff['mean_difference']:+.3f} +/- {diff['band']:.3f} (n={diff['n']}): {verdict}.")
