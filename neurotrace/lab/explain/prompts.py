"""The texts an LLM reads to explain a unit and to judge an explanation, and the parsing of its replies.

The explainer prompt follows the published explainers (Bills et al. 2023; Delphi): excerpts from a corpus with the
tokens where the unit fires marked, the strongest first, then a one-sentence answer. The judges follow Delphi's
detection and fuzzing scorers: they see the explanation and numbered excerpts, never activations, and answer with
the numbers they pick as a JSON list.
"""

import json
import re

from neurotrace.lab.explain.schema import MAX_EXPLANATION_CHARS, Evidence, QuizItem

EXPLAINER_SYSTEM = "You are a careful interpretability researcher. Answer with one sentence only."
JUDGE_SYSTEM = "You grade interpretability explanations. Answer with a JSON list of numbers only."
EXPLANATION_PREFIX = "Explanation:"


def explainer_prompt(ev: Evidence) -> str:
    lines = [
        "A unit of a language model (a neuron or a dictionary feature) activates on some tokens of text. Below are",
        "excerpts where it activates; the tokens where it fires are marked <<like this>>, the strongest first.",
        "Say in one short sentence what the unit responds to (the marked tokens and, if it matters, their context).",
        "",
    ]
    for i, ex in enumerate([*ev.top, *ev.quantiles], 1):
        lines.append(f"Excerpt {i} (max activation {ex.max_activation:.3g}): {ex.text}")
    if ev.promoted:
        lines += ["", "Tokens its output promotes: " + ", ".join(repr(t) for t in ev.promoted[:10])]
    lines += ["", f"Reply as: {EXPLANATION_PREFIX} <one sentence>"]
    return "\n".join(lines)


def _judge_prompt(explanation: str, items: list[QuizItem], question: list[str], answer: str) -> str:
    return "\n".join([f"A unit of a language model is explained as: {explanation!r}", *question, "",
                      *[f"{q.id}. {q.text}" for q in items], "", answer])


def detection_prompt(explanation: str, items: list[QuizItem]) -> str:
    return _judge_prompt(explanation, items, [
        "Which of the excerpts below contain text on which this unit would activate? Some do, some do not."],
        "Answer with a JSON list of the numbers of the excerpts where it activates, e.g. [3, 7].")


def fuzzing_prompt(explanation: str, items: list[QuizItem]) -> str:
    return _judge_prompt(explanation, items, [
        "Each excerpt below has some tokens marked <<like this>>. In some excerpts the marks are on the tokens where",
        "the unit activates; in others they were put on other tokens. Which excerpts are marked correctly?"],
        "Answer with a JSON list of the numbers of the correctly marked excerpts, e.g. [2, 5].")


def parse_explanation(reply: str) -> str:
    """The sentence after 'Explanation:' (or the reply's first non-empty line), capped."""
    text = reply.strip()
    if EXPLANATION_PREFIX.lower() in text.lower():
        text = text[text.lower().index(EXPLANATION_PREFIX.lower()) + len(EXPLANATION_PREFIX):]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line[:MAX_EXPLANATION_CHARS]


def parse_ids(reply: str) -> list[int]:
    """The numbers of the last JSON list in a reply (or every number in it when it has no list), deduplicated."""
    found = re.findall(r"\[[^\[\]]*\]", reply)
    numbers: list[int] = []
    for chunk in reversed(found):
        try:
            value = json.loads(chunk)
        except json.JSONDecodeError:
            continue
        if isinstance(value, list):
            numbers = [int(v) for v in value if isinstance(v, int | float) or (isinstance(v, str) and v.isdigit())]
            break
    else:
        numbers = [int(n) for n in re.findall(r"\d+", reply)]
    return list(dict.fromkeys(numbers))
