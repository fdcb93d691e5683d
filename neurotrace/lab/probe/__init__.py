"""probe: cross-validated linear probes for a labelled prompt set across layers; directions for steer.

Also the face of the record steer reads back: ``ProbeResults`` (probe_results.json).
"""

from neurotrace.lab.experiment import Experiment, Figures
from neurotrace.lab.probe import figures
from neurotrace.lab.probe.run import run_probe
from neurotrace.lab.probe.schema import ProbeRequest, ProbeResult, ProbeResults

__all__ = ["PROBE", "ProbeRequest", "ProbeResult", "ProbeResults", "run_probe"]

PROBE = Experiment(run_probe, ProbeRequest, ProbeResult, figures=Figures(figures.FIGURES, figures.RESULTS_FILE, ProbeResults))
