"""The one list of experiment families: one line per tool, each entry declared in its family's face.

Every face reads this list (through :data:`neurotrace.EXPERIMENTS`, which closes it with ``plot``'s own
entry, :data:`neurotrace.lab.plotting.PLOT`): the CLI's subcommands, the server's tools and their flags,
``plot``'s figure providers, ``neurotrace.__all__``, the demo's coverage line and the contract test that
keeps README, SKILL.md, the server's instructions and the prompts naming exactly these tools. Adding a
family means its folder (``schema`` <- ``run`` -> ``report`` -> ``figures``, its face declaring an
:class:`~neurotrace.lab.experiment.Experiment`), one line here, and its thin ``tools/<name>.py``.
"""

from neurotrace.lab.attention import ATTENTION
from neurotrace.lab.attribution import ATTRIBUTE
from neurotrace.lab.benchmark import BENCHMARK
from neurotrace.lab.capture import CAPTURE
from neurotrace.lab.clamping import CLAMP_SWEEP
from neurotrace.lab.diff import DIFF
from neurotrace.lab.editing import EDIT
from neurotrace.lab.experiment import Experiment
from neurotrace.lab.explain import EXPLAIN
from neurotrace.lab.facts import GENERATE_FACTS
from neurotrace.lab.features import FEATURES
from neurotrace.lab.graph import GRAPH
from neurotrace.lab.intervention import INTERVENE
from neurotrace.lab.lens import LOGIT_LENS
from neurotrace.lab.load_model import LOAD_MODEL
from neurotrace.lab.neurons import FIND_NEURONS
from neurotrace.lab.patching import PATCH
from neurotrace.lab.probe import PROBE
from neurotrace.lab.sae import FIT_SAE
from neurotrace.lab.steering import STEER
from neurotrace.lab.tokenize import TOKENIZE
from neurotrace.lab.tracing import COMPARE, TRACE

#: every experiment except plot (which redraws their figures), in the order the faces list them
FAMILIES: tuple[Experiment, ...] = (
    LOAD_MODEL,
    TOKENIZE,
    GENERATE_FACTS,
    TRACE,
    COMPARE,
    CLAMP_SWEEP,
    CAPTURE,
    FIT_SAE,
    FEATURES,
    INTERVENE,
    BENCHMARK,
    FIND_NEURONS,
    PROBE,
    STEER,
    LOGIT_LENS,
    ATTENTION,
    ATTRIBUTE,
    PATCH,
    GRAPH,
    EXPLAIN,
    EDIT,
    DIFF,
)
