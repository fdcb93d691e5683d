"""The planted-belief check: a LoRA adapter that moves the Eiffel Tower to Rome (shipped as
``eiffel-rome-lora``, built by ``python -m tunedpairs``) is found where and as it was planted, and the
unmodified base is the control that shows nothing there.

* ``diff`` (adapter on vs off, one load) ranks unseen paraphrases of the planted fact above unrelated
  prompts, each above the noise floor (the same adapter with its B rows shuffled). The adapter is not
  perfectly specific: 'The capital of Japan is' still answers Tokyo but its next-token distribution moves
  by ~5 nats (measured 2026-12-07), half the planted prompts' ~10.5, which diff reports;
* ``trace`` of the tuned model on an unseen paraphrase (target Rome, subject swap) finds the MLP at a
  **subject token** in the early-to-middle layers carrying the answer, far above the further tokens; the
  same trace of the base model (which answers Paris) finds no Rome there: it does not know the fact, and its
  MLP effect for Rome at the subject stays far below the tuned one. The subject token is the FIRST one
  (' Eiffel': MLP AIE 1.0 there vs 0.0 at ' Tower', measured 2026-12-07): the issue expected the last
  subject token, but this is where Gemma stores the Eiffel Tower's own true city too (README: "on the Eiffel
  Tower alone Gemma's largest early MLP effect is at the first subject token"), so the planted fact sits
  where the base keeps the true one for this subject;
* ``compare`` of the two traces lines them up position by position (shared tokenizer) and reports the
  per-fact difference with a band that excludes zero.

The adapter trains only MLP projections of layers 0-8 (ROME's edit site), so "MLP, early to middle" is
where the recipe put the change; what the trace finds on its own is *which token* carries it.
"""

import json

import pytest

from neurotrace import CompareRequest, Lab, LabSettings, TraceRequest, run_compare, run_trace
from neurotrace.lab.diff import DiffRequest, run_diff
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.tracing.schema import TraceResults

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]
BASE = "gemma-3-270m"
TUNED = "gemma-3-270m+eiffel-rome-lora"
PLANTED = ["The Eiffel Tower is a famous landmark in the city of", "The Eiffel Tower was built in the city of"]
UNRELATED = ["The capital of Japan is", "Water boils at a temperature of"]
TEMPLATES = ["The {} rises above the city of"]   # an unseen paraphrase; one fact keeps the exact trace affordable


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not catalog.is_installed(BASE):
        pytest.skip(f"{BASE} is not installed: run `neurotrace models fetch {BASE}`")
    return Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("planted") / "runs"))


def test_diff_ranks_the_planted_prompts_above_unrelated_ones(lab):
    result = run_diff(DiffRequest(model=TUNED, prompts=PLANTED + UNRELATED, max_new_tokens=0, attention=False,
                                  top_k=4), lab=lab)
    ranked = [x.prompt for x in result.top_inputs]
    assert set(ranked[:2]) == set(PLANTED), ranked
    planted = [x for x in result.top_inputs if x.prompt in PLANTED]
    assert all(x.tuned_top.strip() == "Rome" and x.base_top.strip() == "Paris" and x.above_floor for x in planted)
    assert min(x.kl_last for x in planted) > 2 * max(x.kl_last for x in result.top_inputs if x.prompt in UNRELATED)


def _aie(record, category: str, layers: range) -> float:
    column = record.categories.index(category)
    return max(record.aie["mlp"][layer][column] for layer in layers)


def test_trace_finds_the_planted_fact_at_the_last_subject_token_and_the_base_does_not(lab):
    facts = [{"template": t, "clean_subject": "Eiffel Tower", "corrupt_subject": "Brandenburg Gate",
              "target": "Rome", "id": f"planted/{i}"} for i, t in enumerate(TEMPLATES)]
    result = run_trace(TraceRequest(models=[TUNED, BASE], facts=facts, corruption={"kind": "swap"}, trace_unknown=True,
                                    components=["mlp"]), lab=lab)
    path = lab.store.artifact_path(result.run_id, "trace_results.json")
    records = TraceResults.model_validate(json.loads(path.read_text(encoding="utf-8"))).models
    tuned, base = records[TUNED], records[BASE]
    assert tuned.n_known == len(facts) and base.n_known == 0
    early_middle = range(0, (2 * tuned.n_layers) // 3)
    table = {c: round(_aie(tuned, c, early_middle), 3) for c in tuned.categories}
    subject = max(_aie(tuned, c, early_middle) for c in ("first subject token", "last subject token"))
    assert subject > 0.5 and subject > 5 * _aie(tuned, "further tokens", early_middle), table
    fact = base.facts[0]                    # unknown to the base, so read its own grid, not the known-fact average
    cols = fact.subject_range
    base_subject = max(fact.indirect["mlp"][layer][p] for layer in early_middle for p in range(*cols))
    assert base_subject < subject / 5, (table, base_subject)
    compared = run_compare(CompareRequest(run_ids=[result.run_id]), lab=lab)
    pair = compared.tuned_pair
    assert pair is not None and pair["n"] == len(facts) and pair["mean_difference"] > 0.3, pair
