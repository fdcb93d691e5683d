"""clamp_sweep in bfloat16: its float32 recheck against a whole float32 sweep on every decoder family and
fact-gpt2, a planted one-row difference found and its changed reading flagged, the fallback, the cost model."""

import json

import pytest

from neurotrace import ClampSweepRequest, run_clamp_sweep
from neurotrace.lab.clamping.precision import _diff, recheck, to_agreement
from neurotrace.lab.clamping.prompt_grid import resolve_prompts
from neurotrace.lab.clamping.sweep import build_conditions, run_rows, score_rows, tokenize_prompts
from neurotrace.lab.errors import InputError
from neurotrace.lab.model.runtime.precision import ENV_FAST, lease_pair
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import Reporter
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.planted_clamp import build_repetition_model
from neurotrace.testing.tiny import DECODER_FAMILIES, build_tiny, word_prompts

pytestmark = pytest.mark.usefixtures("fast_bfloat16")  # the agreement is under test, not this CPU's speed


def _tokens(lab, result):
    path = lab.store.artifact_path(result.run_id, "tables/generations.jsonl")
    return [json.loads(line)["tokens"] for line in path.read_text("utf-8").splitlines()]


def _readings(r):
    return (r.n_collapsed_baselines, r.n_recovered, [(g.best_value, g.n_recovered) for g in r.groups])


@pytest.mark.parametrize("family", [*DECODER_FAMILIES, "fact-gpt2"])
def test_bfloat16_sweep_agrees_with_the_whole_float32_sweep_within_its_reported_bound(lab, tmp_path, family):
    model = family if family == "fact-gpt2" else str(build_tiny(family, tmp_path / family))
    fields = {"model": model, "neurons": ["1:3"], "prompts": word_prompts(2, 4, seed=3), "values": [0],
              "max_new_tokens": 6, "controls": 0}
    r32 = run_clamp_sweep(ClampSweepRequest(**fields), lab=lab)
    r16 = run_clamp_sweep(ClampSweepRequest(**fields, precision="bfloat16"), lab=lab)
    assert r32.precision == "float32" and r32.precision_agreement is None
    a = r16.precision_agreement
    assert r16.precision == "bfloat16" and a is not None and a.n == r16.n_rows == 4     # a small grid: every row
    true = [_diff(x, y)[0] for x, y in zip(_tokens(lab, r16), _tokens(lab, r32), strict=True)]
    assert max(true) == pytest.approx(a.max_abs_diff)           # the reported bound is the whole sweep's
    assert bool(a.changed) == (_readings(r16) != _readings(r32))   # a reading is flagged iff float32's differs
    assert a.summary in r16.summary and ("reading(s) would change" in a.summary) == bool(a.changed)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_repetition_model(tmp_path_factory.mktemp("planted") / "m", layer=1, index=3)


def test_a_planted_one_row_difference_is_found_and_the_reading_it_changes_is_flagged(lab, planted):
    request = ClampSweepRequest(model=str(planted), neurons=["1:3"], prompts=["the cat", "paris is the capital of",
                                "a"], max_new_tokens=12, values=[0, None, 10], controls=1, precision="bfloat16")
    prompts = resolve_prompts(request.prompts, None)
    with lease_pair(lab.cache, ModelRef(model=str(planted)), "bfloat16") as (work, lm):
        conds = build_conditions(request, lm)
        ids = tokenize_prompts(lm, prompts, request)
        out = run_rows(work, request, conds, ids, Reporter())
        score_rows(out.rows, lm, request.thresholds)
        clean = recheck(lm, request, conds, ids, out, Reporter())
        assert clean.n_differ == clean.n_flips == 0 and clean.changed == []     # nothing planted, nothing found
        # plant: prompt 0's row at 1:3=0 (it recovers a looping baseline) gets its baseline's loop instead
        row = next(i for i, r in enumerate(out.rows) if r.prompt == 0 and conds[r.cond].value == 0.0
                   and conds[r.cond].control_of is None)
        base = next(i for i, r in enumerate(out.rows) if r.prompt == 0 and r.cond == 0)
        out.rows[row].tokens = list(out.rows[base].tokens)
        score_rows([out.rows[row]], lm, request.thresholds)
        found = recheck(lm, request, conds, ids, out, Reporter())
    assert row in found.picked[:found.n_deciding]                  # a deciding row: always recomputed
    assert found.n_differ == 1 and found.n_flips == 1
    agreed = to_agreement(found, out.rows, prompts, conds, request.seed)
    assert agreed.worst == "p0 1:3=0" and agreed.max_abs_diff > 0.5
    assert "recovered baselines: 2 -> 3" in agreed.changed and "1:3 recoveries: 2 -> 3" in agreed.changed
    assert "2 reading(s) would change" in agreed.summary and "precision='float32'" in agreed.rerun


def test_a_cpu_without_fast_bfloat16_runs_float32_and_says_so(lab, planted, monkeypatch):
    monkeypatch.setenv(ENV_FAST, "0")
    r = run_clamp_sweep(ClampSweepRequest(model=str(planted), neurons=["1:3"], prompts=["a"], values=[0],
                                          max_new_tokens=4, controls=0, precision="bfloat16"), lab=lab)
    assert r.precision == "float32" and r.precision_agreement is None
    assert "not faster" in r.summary and "insist_precision" in r.summary


def test_bfloat16_refuses_sampling_and_its_dry_run_counts_the_recheck(lab, planted):
    fields = {"model": str(planted), "neurons": ["1:3"], "prompts": ["a", "the cat"], "values": [0, 10],
              "max_new_tokens": 4, "controls": 1}
    with raises_lab_error(InputError, match="greedy"):
        run_clamp_sweep(ClampSweepRequest(**fields, precision="bfloat16",
                                          sampling={"kind": "sample", "temperature": 1.0}), lab=lab)
    f32, b16 = ClampSweepRequest(**fields).cost(lab), ClampSweepRequest(**fields, precision="bfloat16").cost(lab)
    assert b16.rows > f32.rows and "precision" in b16.fields and "precision" not in f32.fields
