"""explain: name a neuron or dictionary feature from corpus evidence, with the client's LLM, and score it blind."""

from neurotrace.lab.experiment import Experiment, Figures
from neurotrace.lab.explain import figures
from neurotrace.lab.explain.labels import Label, dictionary_labels, read_labels
from neurotrace.lab.explain.prompts import (
    EXPLAINER_SYSTEM,
    JUDGE_SYSTEM,
    detection_prompt,
    explainer_prompt,
    fuzzing_prompt,
    parse_explanation,
    parse_ids,
)
from neurotrace.lab.explain.run import Prepared, prepare_explain, run_explain
from neurotrace.lab.explain.schema import (
    RESULTS_FILE,
    AnswerSheet,
    ExplainRequest,
    ExplainResult,
    ExplainResults,
)

__all__ = ["EXPLAIN", "EXPLAINER_SYSTEM", "JUDGE_SYSTEM", "AnswerSheet", "ExplainRequest", "ExplainResult", "Label", "Prepared",
           "detection_prompt", "dictionary_labels", "explainer_prompt", "fuzzing_prompt", "parse_explanation",
           "parse_ids", "prepare_explain", "read_labels", "run_explain"]

EXPLAIN = Experiment(run_explain, ExplainRequest, ExplainResult,
                     figures=Figures(figures.FIGURES, RESULTS_FILE, ExplainResults))
