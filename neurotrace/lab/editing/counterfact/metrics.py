"""CounterFact's edit metrics as plain functions over measured numbers and texts (Meng et al. 2022, sec. 4.2).

* **efficacy / generalisation**: the share of prompts (the edit prompt; its paraphrases) where
  ``p(new) > p(true)`` (ROME's "efficacy score" and "paraphrase score").
* **specificity** (neighbourhood score): the share of neighbourhood prompts - other subjects with the same
  relation - where the neighbour's own answer still beats the new target, ``p(true_n) > p(new)``.
* **unrelated**: the share of facts of other relations whose top-1 token is the same after the edit.
* **fluency**: ROME's generation entropy, ``(2/3 H_2 + 4/3 H_3) / 2`` where ``H_n`` is the entropy (bits)
  of the n-gram frequency distribution of a generated text's words.
* **consistency**: ROME's reference score, the TF-IDF cosine between a generated text about the subject and
  reference text about the new target (IDF over the texts compared).

Rates get a 95% Wilson band, means a 95% Student t band (:func:`rate`, :func:`mean`).
"""

import math
import re
from collections import Counter
from collections.abc import Sequence

from neurotrace.lab.editing.schema import Score
from neurotrace.lab.tracing import t975

WORD_RE = re.compile(r"\w+|[^\w\s]")
Z95 = 1.959964


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of k successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))   # p inside despite rounding


def rate(hits: Sequence[bool]) -> Score:
    """The share of True with its Wilson band."""
    n = len(hits)
    if n == 0:
        return Score(value=None, n=0)
    k = sum(bool(h) for h in hits)
    low, high = wilson(k, n)
    return Score(value=k / n, n=n, low=low, high=high)


def mean(values: Sequence[float]) -> Score:
    """The mean with its 95% Student t band (no band for fewer than 2 values)."""
    n = len(values)
    if n == 0:
        return Score(value=None, n=0)
    m = sum(values) / n
    if n < 2:
        return Score(value=m, n=1)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return Score(value=m, n=n, low=m - half, high=m + half)


def beats(p_a: Sequence[float], p_b: Sequence[float]) -> list[bool]:
    """Per prompt, p_a > p_b."""
    return [a > b for a, b in zip(p_a, p_b, strict=True)]


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """ROME's fluency of one text: the mean of ``weight_n * H_n`` (bits) over n-gram orders."""
    tokens = words(text)
    parts = []
    for n, w in zip(ns, weights, strict=True):
        grams = Counter(tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1))
        total = sum(grams.values())
        h = -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0
        parts.append(w * h)
    return sum(parts) / len(parts)


def tfidf_cosine(text: str, reference: str, corpus: Sequence[str]) -> float:
    """Cosine of the TF-IDF vectors of ``text`` and ``reference``; IDF from ``corpus`` (which should hold
    both), ``log((1 + N) / (1 + df)) + 1``."""
    docs = [Counter(words(d)) for d in corpus]
    df = Counter(w for d in docs for w in d)
    idf = {w: math.log((1 + len(docs)) / (1 + c)) + 1 for w, c in df.items()}

    def vec(t: str) -> dict[str, float]:
        counts = Counter(words(t))
        return {w: c * idf.get(w, math.log(1 + len(docs)) + 1) for w, c in counts.items()}

    a, b = vec(text), vec(reference)
    dot = sum(v * b.get(w, 0.0) for w, v in a.items())
    na, nb = math.sqrt(sum(v * v for v in a.values())), math.sqrt(sum(v * v for v in b.values()))
    return dot / (na * nb) if na and nb else 0.0
