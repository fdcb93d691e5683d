"""Scoring a judge's answers: balanced accuracy, a Wilson interval, a scrambled-key null, and the verdict."""

import math

import numpy as np

from neurotrace.lab.errors import InputError
from neurotrace.lab.explain.schema import AnswerSheet, MethodScore, QuizKey, Scores

NULL_DRAWS = 2000
Z95 = 1.959964
RULE = ("predictive: detection balanced accuracy >= 0.75 with its Wilson 95% lower bound above 0.5, and fuzzing "
        ">= 0.6; weak: either method's lower bound above 0.5; not predictive: otherwise (chance is 0.5)")


def balanced_accuracy(picked: set[int], positives: set[int], ids: list[int]) -> float:
    """Mean of the hit rate on positives and the correct-rejection rate on the rest."""
    negatives = set(ids) - positives
    tpr = len(picked & positives) / len(positives) if positives else 1.0
    tnr = len(negatives - picked) / len(negatives) if negatives else 1.0
    return (tpr + tnr) / 2


def wilson(p: float, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion ``p`` observed over ``n`` trials."""
    if n == 0:
        return (0.0, 1.0)
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


def check_answers(picked: list[int], ids: list[int], field: str) -> set[int]:
    unknown = sorted(set(picked) - set(ids))
    if unknown:
        raise InputError(field, f"ids {unknown[:5]} are not items of this quiz (its ids are {ids[0]}..{ids[-1]})",
                         fix=f"answer with ids from {ids[0]} to {ids[-1]}")
    if len(picked) != len(set(picked)):
        raise InputError(field, "an id is listed twice", fix="list each picked id once")
    return set(picked)


def method_score(picked: set[int], positives: list[int], ids: list[int], seed: int) -> MethodScore:
    observed = balanced_accuracy(picked, set(positives), ids)
    rng = np.random.default_rng(seed)
    arr = np.array(ids)
    null = np.array([balanced_accuracy(picked, set(rng.permutation(arr)[:len(positives)].tolist()), ids)
                     for _ in range(NULL_DRAWS)])
    return MethodScore(n=len(ids), balanced_accuracy=round(observed, 4), ci95=wilson(observed, len(ids)),
                       null_mean=round(float(null.mean()), 4), null_p95=round(float(np.quantile(null, 0.95)), 4),
                       p_value=round(float((1 + (null >= observed - 1e-12).sum()) / (1 + NULL_DRAWS)), 4))


def verdict_of(det: MethodScore, fuzz: MethodScore) -> str:
    if det.balanced_accuracy >= 0.75 and det.ci95[0] > 0.5 and fuzz.balanced_accuracy >= 0.6:
        return "predictive"
    if det.ci95[0] > 0.5 or fuzz.ci95[0] > 0.5:
        return "weak"
    return "not predictive"


def score(answers: AnswerSheet, key: QuizKey, seed: int) -> Scores:
    det_pick = check_answers(answers.detection, key.detection_ids, "answers.detection")
    fuzz_pick = check_answers(answers.fuzzing, key.fuzzing_ids, "answers.fuzzing")
    det = method_score(det_pick, key.detection, key.detection_ids, seed)
    fuzz = method_score(fuzz_pick, key.fuzzing, key.fuzzing_ids, seed + 1)
    return Scores(detection=det, fuzzing=fuzz, verdict=verdict_of(det, fuzz), rule=RULE)  # type: ignore[arg-type]
