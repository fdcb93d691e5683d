"""CounterFact's metrics on hand-built cases: rates and bands, ROME's n-gram entropy, TF-IDF consistency."""

import math

import pytest

from neurotrace.lab.editing.counterfact.measure import State
from neurotrace.lab.editing.counterfact.metrics import mean, ngram_entropy, rate, tfidf_cosine, wilson


def test_wilson_band_matches_the_textbook_values():
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0


def test_rate_and_mean_carry_n_and_a_band():
    r = rate([True, True, False, True])
    assert (r.value, r.n) == (0.75, 4) and r.low < 0.75 < r.high
    assert rate([]).value is None and rate([]).n == 0
    m = mean([1.0, 2.0, 3.0])
    assert m.value == 2.0 and m.n == 3
    assert m.high - 2.0 == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)   # t_975(2) sd / sqrt(n)
    assert mean([5.0]).low is None


def test_ngram_entropy_by_hand():
    # bigrams (a,b) x2, (b,a) x1 -> H2 = 0.9183 bits; trigrams (a,b,a), (b,a,b) -> H3 = 1 bit
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert ngram_entropy("the the the the the the") == 0.0              # a repetition loop is not fluent
    assert ngram_entropy("one two three four five six") > ngram_entropy("one two one two one two")


def test_tfidf_cosine_by_hand():
    corpus = ["paris is in france", "rome is in italy", "bananas are yellow"]
    assert tfidf_cosine("rome is in italy", "rome is in italy", corpus) == pytest.approx(1.0)
    assert tfidf_cosine("bananas are yellow", "rome is in italy", corpus) == 0.0
    near = tfidf_cosine("the city of rome in italy", "rome is in italy", corpus)
    far = tfidf_cosine("paris is in france", "rome is in italy", corpus)
    assert 0 < far < near < 1


def test_efficacy_generalisation_and_specificity_from_readings():
    s = State(p_new=[0.6, 0.2, 0.5], p_true=[0.3, 0.4, 0.1], nb_true=[0.7, 0.1], nb_new=[0.2, 0.3],
              unrelated_top=[], texts=[])
    assert s.efficacy() == [True]                        # the edit prompt: p(new) 0.6 > p(true) 0.3
    assert s.generalisation() == [False, True]           # the paraphrases
    assert s.specificity() == [True, False]              # the second neighbour now prefers the new target
