"""capture in bfloat16: its float32 recheck against a whole float32 capture on every decoder family and
fact-gpt2, a planted one-row difference found, a step whose float32 output differs flagged, the cost model."""

import numpy as np
import pytest

from neurotrace.lab.capture import CaptureRequest, load_trace_dataset, run_capture
from neurotrace.lab.capture.precision import StatesCheck
from neurotrace.lab.capture.run import _loader, _recheck_steps
from neurotrace.lab.model.runtime.precision import lease_pair
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.testing.tiny import DECODER_FAMILIES, build_tiny, word_prompts

SITES = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


pytestmark = pytest.mark.usefixtures("fast_bfloat16")  # the agreement is under test, not this CPU's speed


def _states(lab, result, site):
    return np.asarray(load_trace_dataset(lab, result.run_id, site).states, dtype=np.float64)


@pytest.mark.parametrize("family", [*DECODER_FAMILIES, "fact-gpt2"])
def test_bfloat16_capture_agrees_with_the_whole_float32_capture_within_its_reported_bound(lab, tmp_path, family):
    model = family if family == "fact-gpt2" else str(build_tiny(family, tmp_path / family))
    fields = {"model": model, "prompts": word_prompts(2, 5, seed=5), "sites": SITES, "max_new_tokens": 3}
    r32 = run_capture(CaptureRequest(**fields), lab=lab)
    r16 = run_capture(CaptureRequest(**fields, precision="bfloat16"), lab=lab)
    a = r16.precision_agreement
    assert r32.precision_agreement is None and r16.precision == "bfloat16" and a.n == 2             # 2 steps: both
    assert "precision" not in lab.store.read_json(r32.run_id, "capture.json")           # float32 keys unchanged
    assert bool(a.changed) == (r16.outputs != r32.outputs)      # flagged iff float32 generates other tokens
    if r16.outputs == r32.outputs:                              # the same rows: the bound is every row's
        true = max(float(np.abs(_states(lab, r16, s) - _states(lab, r32, s)).max()) for s in SITES)
        assert true == pytest.approx(a.max_abs_diff, rel=1e-3, abs=1e-5)
    assert 0 < a.max_abs_diff < 0.5 and a.summary in r16.summary


def test_a_planted_one_row_difference_is_found(lab):
    request = CaptureRequest(model="fact-gpt2", prompts=word_prompts(3, 5, seed=5), sites=SITES[:1],
                             max_new_tokens=2, precision="bfloat16")
    r16 = run_capture(request, lab=lab)
    stored = _states(lab, r16, SITES[0]).astype(np.float32)
    lines = [dict(line) for line in load_trace_dataset(lab, r16.run_id, SITES[0]).steps]
    keep = {i: {SITES[0]: stored[lines[i]["rows"][0]:lines[i]["rows"][1]].copy()} for i in range(3)}
    keep[1][SITES[0]][2, 5] += 7.0                                             # plant: one value of step 1
    with lease_pair(lab.cache, ModelRef(model="fact-gpt2"), "bfloat16") as (_, lm32):
        found = _recheck_steps(lm32, request, SITES[:1], lines, keep, _loader(lab, None))
    assert max(found.diffs, key=found.diffs.get) == 1 and found.max_abs_diff == pytest.approx(7.0, abs=0.1)
    assert max(v for k, v in found.diffs.items() if k != 1) < 0.1          # the other steps: bfloat16 noise only
    check = StatesCheck(picked=[0], n_steps=1)
    check.greedy(0, [5, 6, 7], [5, 6, 9])                                    # float32 would pick another token
    assert check.changed == ["step 0's output: float32 picks another token at generated position 2"]


def test_the_dry_run_reflects_bfloat16(lab):
    f32 = CaptureRequest(model="fact-gpt2", prompts=["a b"], max_new_tokens=4).cost(lab)
    b16 = CaptureRequest(model="fact-gpt2", prompts=["a b"], max_new_tokens=4, precision="bfloat16").cost(lab)
    assert b16.bytes > f32.bytes and "precision" in b16.fields
