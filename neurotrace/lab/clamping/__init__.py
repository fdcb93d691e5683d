"""clamp_sweep: hold MLP neurons at fixed values while the model generates; which values rescue collapse?"""

from neurotrace.lab.clamping.run import run_clamp_sweep
from neurotrace.lab.clamping.schema import ClampSweepRequest, ClampSweepResult

__all__ = ["ClampSweepRequest", "ClampSweepResult", "run_clamp_sweep"]
