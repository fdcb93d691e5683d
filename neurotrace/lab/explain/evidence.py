"""A unit's activations over corpus contexts, the evidence an explainer reads, and the blind quiz a judge answers.

The corpus contexts are split once (seeded) into an evidence pool and a held-out pool. The explainer sees the
evidence pool's top-activating and quantile-sampled excerpts with firing tokens marked ``<<so>>``; the quiz is
drawn from the held-out pool only, so a name is scored on text its writer never saw:

* *detection*: ``n`` firing and ``n`` non-firing held-out excerpts, shuffled, shown unmarked;
* *fuzzing*: ``n`` firing held-out excerpts, half with their firing tokens marked, half with as many other
  tokens marked instead (the Delphi/Bills et al. "fuzzing" scorer), shuffled.

A token *fires* when its activation exceeds ``fire_fraction`` of the unit's largest activation on the corpus.
"""

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.explain.schema import Evidence, Excerpt, Quiz, QuizItem, QuizKey
from neurotrace.lab.model.access.tokens import token_texts

WINDOW_BEFORE = 16
WINDOW_AFTER = 4
TOP_EXCERPTS = 8
QUANTILE_BINS = 4
PER_BIN = 2
MIN_FIRING = 3
EVIDENCE_SHARE = 0.6


@dataclass
class Activations:
    """``acts [n_contexts, T]`` of one unit over ``ids [n_contexts, T]``."""

    ids: Tensor
    acts: np.ndarray


def _window(t: int, peak: int) -> tuple[int, int]:
    start = max(0, peak - WINDOW_BEFORE)
    return start, min(t, peak + WINDOW_AFTER + 1)


def _text(tokens: list[str], marked: set[int], lo: int, hi: int, sep: str = "") -> str:
    return sep.join(f"<<{tokens[i]}>>" if i in marked else tokens[i] for i in range(lo, hi))


def separator(tokenizer, ids: Tensor) -> str:
    """' ' for a word-level tokenizer (its tokens carry no spaces: decode joins them with one), else ''."""
    pair = [int(i) for i in ids[1:3]] if len(ids) > 2 else [int(i) for i in ids[:2]]
    if len(pair) < 2:
        return ""
    joined = "".join(token_texts(tokenizer, pair))
    return " " if tokenizer.decode(pair) == " ".join(token_texts(tokenizer, pair)) != joined else ""


def split_pools(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(evidence contexts, held-out contexts): a seeded split of ``range(n)``."""
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * EVIDENCE_SHARE)))
    return np.sort(order[:cut]), np.sort(order[cut:])


class Builder:
    """Excerpts, evidence and the quiz from one unit's activations."""

    def __init__(self, tokenizer, acts: Activations, fire_fraction: float, seed: int) -> None:
        self.tok = tokenizer
        self.ids = acts.ids
        self.acts = acts.acts
        self.peak = float(self.acts.max()) if self.acts.size else 0.0
        if not self.peak > 0:
            raise InputError("neuron", "the unit never activates above 0 on this corpus",
                             fix="pick another unit, or a corpus or larger max_tokens where it fires")
        self.threshold = fire_fraction * self.peak
        self.rng = np.random.default_rng(seed)
        self._tokens: dict[int, list[str]] = {}
        self.sep = separator(tokenizer, self.ids[0]) if len(self.ids) else ""

    def tokens(self, c: int) -> list[str]:
        if c not in self._tokens:
            self._tokens[c] = token_texts(self.tok, self.ids[c].tolist())
        return self._tokens[c]

    def firing(self, pool: np.ndarray) -> np.ndarray:
        return pool[self.acts[pool].max(axis=1) > self.threshold]

    def excerpt(self, c: int, with_acts: bool) -> Excerpt:
        row = self.acts[c]
        p = int(row.argmax())
        lo, hi = _window(len(row), p)
        toks = self.tokens(c)
        marked = {i for i in range(lo, hi) if row[i] > self.threshold}
        return Excerpt(text=_text(toks, marked, lo, hi, self.sep), max_activation=round(float(row[p]), 4),
                       tokens=toks[lo:hi] if with_acts else None,
                       activations=[round(float(a), 4) for a in row[lo:hi]] if with_acts else None)

    def quantile_sample(self, firing: np.ndarray) -> list[int]:
        """``PER_BIN`` contexts from each of ``QUANTILE_BINS`` bins of the firing contexts' max activation."""
        if not len(firing):
            return []
        maxes = self.acts[firing].max(axis=1)
        order = firing[np.argsort(maxes)]
        picks: list[int] = []
        for part in np.array_split(order, min(QUANTILE_BINS, len(order))):
            take = self.rng.choice(part, size=min(PER_BIN, len(part)), replace=False)
            picks.extend(int(c) for c in take)
        return picks

    def evidence(self, pool: np.ndarray, unit: str, site: str, promoted: list[str],
                 suppressed: list[str]) -> Evidence:
        firing = self.firing(pool)
        if len(firing) < 1:
            raise InputError("max_tokens", f"{unit} fires in none of the {len(pool)} evidence contexts",
                             fix="raise max_tokens, use a corpus where the unit fires, or lower fire_fraction")
        top = firing[np.argsort(-self.acts[firing].max(axis=1))][:TOP_EXCERPTS]
        fired = self.acts[pool][self.acts[pool] > self.threshold]
        hist, _ = np.histogram(fired, bins=10, range=(0.0, self.peak))
        return Evidence(unit=unit, site=site, max_activation=round(self.peak, 4),
                        threshold=round(self.threshold, 4),
                        density=float((self.acts[pool] > self.threshold).mean()),
                        histogram=[int(h) for h in hist],
                        top=[self.excerpt(int(c), True) for c in top],
                        quantiles=[self.excerpt(c, True) for c in self.quantile_sample(firing)],
                        promoted=promoted, suppressed=suppressed)

    def quiet_windows(self, pool: np.ndarray, n: int) -> list[tuple[int, int]]:
        """Up to ``n`` distinct (context, centre) windows of held-out text in which no token fires."""
        found: list[tuple[int, int]] = []
        t = self.acts.shape[1]
        for _ in range(60 * n):
            if len(found) == n:
                break
            c, p = int(self.rng.choice(pool)), int(self.rng.integers(1, t))
            lo, hi = _window(t, p)
            if self.acts[c, lo:hi].max() <= self.threshold and (c, p) not in found:
                found.append((c, p))
        return found

    def quiz(self, pool: np.ndarray, n: int) -> tuple[Quiz, QuizKey]:
        firing = self.rng.permutation(self.firing(pool))
        quiet = self.quiet_windows(pool, n)
        n_det = min(n, max(len(firing) // 2, min(len(firing), MIN_FIRING)), len(quiet))
        if n_det < MIN_FIRING:
            raise InputError("max_tokens", f"only {len(firing)} held-out contexts fire and {len(quiet)} quiet "
                             f"windows were found: too few for a quiz of at least {MIN_FIRING} per class",
                             fix="raise max_tokens (more corpus), or raise fire_fraction if the unit fires almost "
                             "everywhere")
        det_pos, fuzz_src = firing[:n_det], firing[n_det:]
        if len(fuzz_src) < 2:      # few firing contexts: fuzzing reuses the detection positives
            fuzz_src = det_pos
        det_items = [(self._plain(int(c), int(self.acts[c].argmax())), True) for c in det_pos]
        det_items += [(self._plain(c, p), False) for c, p in quiet[:n_det]]
        n_fuzz = min(n, len(fuzz_src)) // 2 * 2
        fuzz_items = [(self._marked(int(c), correct=i % 2 == 0), i % 2 == 0)
                      for i, c in enumerate(fuzz_src[:n_fuzz])]
        det, det_key = self._number(det_items, 1)
        fuzz, fuzz_key = self._number(fuzz_items, len(det) + 1)
        return (Quiz(detection=det, fuzzing=fuzz),
                QuizKey(detection=det_key, fuzzing=fuzz_key, detection_ids=[q.id for q in det],
                        fuzzing_ids=[q.id for q in fuzz]))

    def _number(self, items: list[tuple[str, bool]], first: int) -> tuple[list[QuizItem], list[int]]:
        order = self.rng.permutation(len(items))
        out, key = [], []
        for j, i in enumerate(order):
            text, yes = items[int(i)]
            out.append(QuizItem(id=first + j, text=text))
            if yes:
                key.append(first + j)
        return out, key

    def _plain(self, c: int, centre: int) -> str:
        lo, hi = _window(self.acts.shape[1], centre)
        return _text(self.tokens(c), set(), lo, hi, self.sep)

    def _marked(self, c: int, correct: bool) -> str:
        row = self.acts[c]
        lo, hi = _window(len(row), int(row.argmax()))
        right = [i for i in range(lo, hi) if row[i] > self.threshold]
        if correct:
            return _text(self.tokens(c), set(right), lo, hi, self.sep)
        others = [i for i in range(lo, hi) if row[i] <= self.threshold and self.tokens(c)[i].strip()]
        others = others or [i for i in range(lo, hi) if i not in right]
        pick = self.rng.choice(others, size=min(len(right), len(others)), replace=False)
        return _text(self.tokens(c), {int(i) for i in pick}, lo, hi, self.sep)
