"""Opt-in checks against published results on real pretrained weights.

Set NEUROTRACE_WEIGHTS_DIR to a directory holding HuggingFace-format checkpoints (e.g. ``gpt2/``,
``gpt2-medium/``); otherwise these tests skip. Nothing is downloaded.
"""

import os
from pathlib import Path

import pytest

from neurotrace import TraceRequest, run_trace
from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.progress import Reporter

WEIGHTS = os.environ.get("NEUROTRACE_WEIGHTS_DIR")
pytestmark = pytest.mark.realmodel

# Meng et al. (2022), Fig. 1: the Space Needle fact is recalled through mid-layer MLPs at the last
# subject token ("le" of "Needle"), and late attention at the last token.
SPACE_NEEDLE = Fact(id="space-needle", template="{} is located in the city of", clean_subject="The Space Needle",
                    target="Seattle")


def _weights(name: str) -> Path:
    if not WEIGHTS:
        pytest.skip("NEUROTRACE_WEIGHTS_DIR is not set (opt-in real-model checks)")
    path = Path(WEIGHTS) / name
    if not (path / "config.json").is_file():
        pytest.skip(f"no {name} checkpoint under {WEIGHTS}")
    return path


@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium", "gpt2-xl"])
def test_space_needle_is_stored_in_early_to_middle_mlps_at_the_last_subject_token(name, tmp_path):
    path = _weights(name)
    lab = Lab(LabSettings(runs_dir=tmp_path))
    result = run_trace(TraceRequest(models=[str(path)], facts=[SPACE_NEEDLE], components=["mlp"]), lab=lab,
                       reporter=Reporter())
    trace = result.models[0]
    assert trace.n_known == 1, "the model should predict ' Seattle'"
    assert trace.peak.position == "last subject token"
    assert trace.peak.layer < trace.n_layers * 0.6
