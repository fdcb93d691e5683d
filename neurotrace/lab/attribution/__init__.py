"""attribute: direct logit attribution and attribution patching; features reads the unembedding through
:func:`unembedding` and a norm's elementwise scale through :func:`freeze`."""

from neurotrace.lab.attribution import figures
from neurotrace.lab.attribution.dla import freeze, unembedding
from neurotrace.lab.attribution.run import run_attribute
from neurotrace.lab.attribution.schema import (
    RESULTS_FILE,
    AttributeRequest,
    AttributeResult,
    AttributeResults,
)
from neurotrace.lab.experiment import Experiment, Figures

__all__ = ["ATTRIBUTE", "AttributeRequest", "AttributeResult", "freeze", "run_attribute", "unembedding"]

ATTRIBUTE = Experiment(run_attribute, AttributeRequest, AttributeResult, figures=Figures(figures.FIGURES, RESULTS_FILE, AttributeResults))
