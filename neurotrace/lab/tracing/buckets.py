"""Token categories and the averages over facts: mean, n and ROME's 95% band per category.

Default convention: every position has exactly one :class:`TokenCategory`; a fact contributes one row
per category it has (the mean over its positions there), and a category's average is over the facts
that have it - so its ``n`` can be smaller than the number of facts, and is reported.

``rome_compat`` uses ROME's buckets (``average_causal_effects`` notebook): first, middle and last
subject token, first subsequent token, further tokens, last token. They may overlap (a one-token
subject is both first and last; a subject right before the last token makes the first subsequent token
the last token), and the middle and further buckets add one row per *token* (ROME's ``add_all``).
The band is 1.96 sd / sqrt(n) in both (sample sd by default, ROME's population sd under rome_compat).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from neurotrace.lab.tracing.prepare import PreparedFact
from neurotrace.lab.tracing.schema import CATEGORY_LABELS, ROME_BUCKETS, TokenCategory


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


@dataclass
class Average:
    mean: Tensor     # (layer, bucket), nan where no rows
    band: Tensor     # (layer, bucket) 1.96 sd / sqrt(n), nan where no rows
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
        band[:, c] = (1.96 * sd / len(rows) ** 0.5).float()
    return Average(mean, band, n)
