"""neurotrace: a mechanistic-interpretability lab for agents, served over MCP.

The Python face: make a :class:`Lab` (model cache + run store) and call any experiment::

    from neurotrace import Lab, LabSettings, TraceRequest, run_trace
    lab = Lab(LabSettings(runs_dir="runs"))
    result = run_trace(TraceRequest(models=["fact-gpt2-cyber"], pack="cybersecurity", max_facts=3), lab=lab)
    print(result.summary)

The core lives in :mod:`neurotrace.lab` (plain Python + torch, no MCP); the MCP server in
:mod:`neurotrace.server`, the thin tool faces in :mod:`neurotrace.tools`, and the CLI in
:mod:`neurotrace.cli`. Each tool ``x`` is ``run_x`` here, ``neurotrace x`` on the command line and the
MCP tool ``x``; :data:`EXPERIMENTS` is the one list they are all read from.
"""

__version__ = "0.1.0"

from neurotrace.lab.experiment import Experiment  # noqa: E402
from neurotrace.lab.experiments import FAMILIES  # noqa: E402
from neurotrace.lab.lab import Lab, LabSettings  # noqa: E402
from neurotrace.lab.plotting import PLOT  # noqa: E402

#: the one list of experiments every face reads: each family's declared entry, then plot
EXPERIMENTS: tuple[Experiment, ...] = (*FAMILIES, PLOT)

# the Python face is the list's: run_<tool>, its Request and its Result for every experiment
FACE: dict[str, object] = {obj.__name__: obj for e in EXPERIMENTS for obj in (e.run, e.request, e.result)}
globals().update(FACE)

__all__ = ["EXPERIMENTS", "Experiment", "Lab", "LabSettings", *FACE]
