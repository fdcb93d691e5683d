"""Localisation vs editing (Hase et al. 2023): edit each fact at every layer, set the result beside the trace.

For each layer and each known fact, ROME's update is made at that layer alone (original weights each time)
and the edit prompt read: success (``p(new) > p(true)``) and the gain ``p(new) after - before``. The trace's
indirect effect of the MLP at the last subject token is taken per fact and layer (facts matched by prompt)
and averaged per layer. Reported: Pearson r across layers (mean effect vs mean gain) and across (fact, layer)
pairs (Hase et al.'s test: does a fact's tracing effect at a layer predict its edit success there?).
"""

import math
from collections.abc import Sequence

from torch import Tensor

from neurotrace.lab.editing.counterfact.cases import Case
from neurotrace.lab.editing.counterfact.measure import CaseIds, State, next_token_probs
from neurotrace.lab.editing.located import Located
from neurotrace.lab.editing.method.updates import apply, preserved, rome_update
from neurotrace.lab.editing.method.vectors import ValueSettings
from neurotrace.lab.editing.schema import Sweep, SweepPoint
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.progress import Reporter


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson r, or None with fewer than 3 points or no spread."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def sweep(lm: LoadedModel, cases: Sequence[Case], ids: Sequence[CaseIds], fields: Sequence[str],
          prefixes: list[str], covs: dict[int, Tensor], settings: ValueSettings, before: Sequence[State],
          located: Located | None, reporter: Reporter) -> Sweep:
    per_fact = located.per_fact if located is not None else {}
    points, pair_x, pair_y = [], [], []
    total = lm.n_layers * len(cases)
    for layer in range(lm.n_layers):
        hits, gains, effects = [], [], []
        for j, (case, case_ids, field) in enumerate(zip(cases, ids, fields, strict=True)):
            reporter.step(layer * len(cases) + j, total, f"sweep: layer {layer}, {case.id}")
            with preserved(lm, [layer]):
                apply(lm, rome_update(lm, case, case_ids, layer, prefixes, covs[layer], settings, field, reporter))
                p = next_token_probs(lm, [(case.template, case.subject)])[0]
            gain = float(p[case_ids.new]) - before[j].p_new[0]
            hits.append(float(p[case_ids.new]) > float(p[case_ids.true]))
            gains.append(gain)
            effect = per_fact.get(case.template.format(case.subject))
            if effect is not None and layer < len(effect):
                effects.append(effect[layer])
                pair_x.append(effect[layer])
                pair_y.append(gain)
        points.append(SweepPoint(layer=layer, efficacy=sum(hits) / len(hits), rewrite_gain=sum(gains) / len(gains),
                                 indirect_effect=sum(effects) / len(effects) if effects else None))
    with_effect = [p for p in points if p.indirect_effect is not None]
    best = max(points, key=lambda p: (p.efficacy, p.rewrite_gain)).layer
    return Sweep(trace_run_id=located.run_id if located is not None else None, points=points,
                 pearson_layers=pearson([p.indirect_effect or 0.0 for p in with_effect],
                                        [p.rewrite_gain for p in with_effect]),
                 pearson_pairs=pearson(pair_x, pair_y), n_pairs=len(pair_x), best_edit_layer=best,
                 located_layer=located.layer if located is not None else None)
