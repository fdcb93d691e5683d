"""The model-lab experiments: load a model into the cache and describe it; list and release."""

from neurotrace.lab.experiment import Experiment
from neurotrace.lab.load_model.run import model_catalog, run_load_model
from neurotrace.lab.load_model.schema import LoadModelResult
from neurotrace.lab.model.weights.loading import ModelRef

__all__ = ["LOAD_MODEL", "LoadModelResult", "model_catalog", "run_load_model"]

LOAD_MODEL = Experiment(run_load_model, ModelRef, LoadModelResult, detachable=False,
                        no_figures="it writes no run: the model's shape is the whole answer")
