"""probe: cross-validated linear probes for a labelled prompt set across layers; directions for steer."""

from neurotrace.lab.probe.run import run_probe
from neurotrace.lab.probe.schema import ProbeRequest, ProbeResult

__all__ = ["ProbeRequest", "ProbeResult", "run_probe"]
