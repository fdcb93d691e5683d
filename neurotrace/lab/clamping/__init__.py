"""clamp_sweep: hold MLP neurons at fixed values while the model generates; which values rescue collapse?

Also the face of the pieces other families reuse: the batched generator (``generate``, ``left_pad``,
``Sampler``), the prompt tokenisation with its BOS rule (``generation_ids``) and the collapse rules
(``CollapseThresholds``, ``text_metrics``, ``collapse_reasons``), so find_neurons generates the same
baselines and calls an output collapsed exactly when clamp_sweep does.
"""

from neurotrace.lab.clamping import figures
from neurotrace.lab.clamping.generation import Sampler, generate, left_pad
from neurotrace.lab.clamping.run import run_clamp_sweep
from neurotrace.lab.clamping.schema import ClampResults, ClampSweepRequest, ClampSweepResult
from neurotrace.lab.clamping.sweep import generation_ids
from neurotrace.lab.effects import CollapseThresholds, collapse_reasons, text_metrics
from neurotrace.lab.experiment import Experiment, Figures

__all__ = ["CLAMP_SWEEP", "ClampSweepRequest", "ClampSweepResult", "CollapseThresholds", "Sampler", "collapse_reasons", "generate",
           "generation_ids", "left_pad", "run_clamp_sweep", "text_metrics"]

CLAMP_SWEEP = Experiment(run_clamp_sweep, ClampSweepRequest, ClampSweepResult, figures=Figures(figures.FIGURES, figures.RESULTS_FILE, ClampResults))
