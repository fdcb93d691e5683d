"""features: Neuronpedia-style pages of a dictionary's features over a corpus capture (:func:`run_features`)."""

from neurotrace.lab.experiment import Experiment
from neurotrace.lab.features.run import run_features
from neurotrace.lab.features.schema import FeaturesRequest, FeaturesResult

__all__ = ["FEATURES", "FeaturesRequest", "FeaturesResult", "run_features"]

FEATURES = Experiment(run_features, FeaturesRequest, FeaturesResult,
                      no_figures="its pages are JSON and a report.html section (tokens shaded by activation)")
