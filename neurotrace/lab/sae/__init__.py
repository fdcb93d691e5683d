"""fit_sae: sparse autoencoders on captured states; intervene loads them (:func:`load_sae_run`)."""

from neurotrace.lab.experiment import Experiment, Figures
from neurotrace.lab.sae import figures
from neurotrace.lab.sae.architectures.base import SAE, SAEConfig
from neurotrace.lab.sae.architectures.registry import load_sae
from neurotrace.lab.sae.density import DENSE_FREQUENCY, Density, density_words
from neurotrace.lab.sae.dictionary import Dictionary, check_fits, load_dictionary, record_dictionary
from neurotrace.lab.sae.run import (
           METRICS_FILE,
           excluded_rows,
           fitted_positions,
           load_sae_run,
           massive_limit,
           run_fit_sae,
)
from neurotrace.lab.sae.schema import DictionaryRef, FitSAERequest, FitSAEResult, SAEMetrics

__all__ = ["DENSE_FREQUENCY", "FIT_SAE", "Density", "density_words", "excluded_rows", "fitted_positions", "massive_limit", "METRICS_FILE", "SAE", "Dictionary", "DictionaryRef", "check_fits", "load_dictionary", "record_dictionary", "FitSAERequest", "FitSAEResult", "SAEConfig", "SAEMetrics", "load_sae", "load_sae_run",
           "run_fit_sae"]

FIT_SAE = Experiment(run_fit_sae, FitSAERequest, FitSAEResult, figures=Figures(figures.FIGURES, figures.RESULTS_FILE, SAEMetrics), reaches_hub=False)
