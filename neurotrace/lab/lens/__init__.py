"""logit_lens: what each layer's residual stream predicts."""

from neurotrace.lab.experiment import Experiment, Figures
from neurotrace.lab.lens import figures
from neurotrace.lab.lens.lens import read_out, row_sites
from neurotrace.lab.lens.run import run_logit_lens
from neurotrace.lab.lens.schema import RESULTS_FILE, LogitLensRequest, LogitLensResult, LogitLensResults

__all__ = ["LOGIT_LENS", "LogitLensRequest", "LogitLensResult", "read_out", "row_sites", "run_logit_lens"]

LOGIT_LENS = Experiment(run_logit_lens, LogitLensRequest, LogitLensResult, figures=Figures(figures.FIGURES, RESULTS_FILE, LogitLensResults))
