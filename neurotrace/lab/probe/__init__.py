"""probe: cross-validated linear probes for a labelled prompt set across layers; directions for steer.

Also the face of the record steer reads back: ``ProbeResults`` (probe_results.json).
"""

from neurotrace.lab.probe.run import run_probe
from neurotrace.lab.probe.schema import ProbeRequest, ProbeResult, ProbeResults

__all__ = ["ProbeRequest", "ProbeResult", "ProbeResults", "run_probe"]
