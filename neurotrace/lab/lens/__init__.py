"""logit_lens: what each layer's residual stream predicts."""

from neurotrace.lab.lens.run import run_logit_lens
from neurotrace.lab.lens.schema import LogitLensRequest, LogitLensResult

__all__ = ["LogitLensRequest", "LogitLensResult", "run_logit_lens"]
