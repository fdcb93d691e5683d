"""intervene in bfloat16: its float32 recheck against a whole float32 run on every decoder family and fact-gpt2,
a planted one-prompt difference found and the readings it changes flagged, float32 reports unchanged."""

import pytest

from neurotrace.lab.intervention.figures import REPORT_FILE
from neurotrace.lab.intervention.precision import PromptsCheck, compare, deciding_prompt, to_agreement
from neurotrace.lab.intervention.run import run_intervene
from neurotrace.lab.intervention.schema import InterveneReport, InterveneRequest
from neurotrace.testing.tiny import DECODER_FAMILIES, build_tiny, word_prompts

FACTS = [{"prompt": "The capital of France is", "target": " Paris", "foil": " Rome"},
         {"prompt": "The capital of Italy is", "target": " Rome", "foil": " Paris"}]


pytestmark = pytest.mark.usefixtures("fast_bfloat16")  # the agreement is under test, not this CPU's speed


def _request(model, **kw):
    prompts = FACTS if model == "fact-gpt2" else [{"prompt": p, "target": "paris", "foil": "rome"}
                                                   for p in word_prompts(2, 5, seed=4)]
    return InterveneRequest(model=model, prompts=prompts, max_new_tokens=3, controls=1, rank_features=0,
                            policies=[{"kind": "set_neurons", "neurons": ["1:3", "1:5"], "value": 0}], **kw)


def _report(lab, result):
    return InterveneReport.model_validate(lab.store.read_json(result.run_id, REPORT_FILE))


def _gaps(a, b):
    pairs = ((a.baseline, b.baseline), (a.intervened, b.intervened))
    return [abs(a.controls.effect - b.controls.effect), *(abs(x.p_target - y.p_target) for x, y in pairs),
            *(abs(x.logit_diff - y.logit_diff) for x, y in pairs)]


@pytest.mark.parametrize("family", [*DECODER_FAMILIES, "fact-gpt2"])
def test_bfloat16_intervene_agrees_with_the_whole_float32_run_within_its_reported_bound(lab, tmp_path, family):
    model = family if family == "fact-gpt2" else str(build_tiny(family, tmp_path / family))
    r32 = run_intervene(_request(model), lab=lab)
    r16 = run_intervene(_request(model, precision="bfloat16"), lab=lab)
    a = r16.precision_agreement
    assert r32.precision_agreement is None and r16.precision == "bfloat16" and a.n == 2          # 2 prompts: both
    assert "precision" not in lab.store.read_json(r32.run_id, REPORT_FILE)              # float32 keys unchanged
    e16, e32 = _report(lab, r16).prompts, _report(lab, r32).prompts
    true = max(g for x, y in zip(e16, e32, strict=True) for g in _gaps(x, y))
    assert true == pytest.approx(a.max_abs_diff, abs=1e-6)      # the recheck recomputes exactly the float32 run
    readings = lambda r: (r.verdict, r.direction, r.effect_size, r.n_text_changed, r.n_top1_changed)  # noqa: E731
    assert bool(a.changed) == (readings(r16) != readings(r32))
    assert a.summary in r16.summary


def test_a_planted_one_prompt_difference_is_found_and_the_readings_it_changes_are_flagged(lab):
    r32 = run_intervene(_request("fact-gpt2"), lab=lab)
    again = dict(enumerate(_report(lab, r32).prompts))                  # the float32 recomputation
    entries = [e.model_copy(deep=True) for e in again.values()]
    clean = compare(entries, again, r32.damage, True, PromptsCheck([0, 1], 1, 2))
    assert clean.diffs == [0.0, 0.0] and clean.changed == []             # nothing planted: nothing flagged
    entries[1].controls.effect += 8.0                                     # plant: one prompt's effect, in logits
    assert deciding_prompt(entries) == [1]                               # it now weighs most: always recomputed
    found = compare(entries, {1: again[1], 0: again[0]}, r32.damage, True, PromptsCheck([1, 0], 1, 2))
    agreed = to_agreement(found, 0)
    assert agreed.chosen[0] == agreed.worst == "prompt 1" and agreed.max_abs_diff == pytest.approx(8.0)
    assert found.diffs[1] == 0.0 and any(c.startswith(("direction:", "effect size:")) for c in agreed.changed)
    assert "reading(s) would change" in agreed.summary and "precision='float32'" in agreed.rerun


def test_the_dry_run_counts_the_float32_recheck(lab):
    f32, b16 = _request("fact-gpt2").cost(lab), _request("fact-gpt2", precision="bfloat16").cost(lab)
    per_prompt = (1 + 1) * 3 + 4 * 1                      # baseline + policy steps, one control per family
    assert b16.rows - f32.rows == 2 * per_prompt and "precision" in b16.fields    # both prompts rerun in float32
