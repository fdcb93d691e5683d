"""fit_sae: sparse autoencoders on captured states; intervene loads them (:func:`load_sae_run`)."""

from neurotrace.lab.sae.base import SAE, SAEConfig
from neurotrace.lab.sae.registry import load_sae
from neurotrace.lab.sae.run import load_sae_run, run_fit_sae
from neurotrace.lab.sae.schema import FitSAERequest, FitSAEResult

__all__ = ["SAE", "FitSAERequest", "FitSAEResult", "SAEConfig", "load_sae", "load_sae_run", "run_fit_sae"]
