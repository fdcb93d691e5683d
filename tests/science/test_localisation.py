"""The science check: where real pretrained LMs store the known facts, as causal tracing measures it.

Runs in CI on the catalog models that the README test command installs (skips with the fetch command
where a model is not installed). Facts: the `known-facts` pack's facts each model knows, with
multi-token subjects (so the first and last subject tokens differ), spread over the relations.
Corruption: subject swap (one sample per cell, exact), so the test fits about ten minutes on two
cores. What is asserted is what the models robustly show (see docs/models.md, "What the real models show"):

* MLP restoration matters most at the **last subject token** in the early-to-middle layers: its
  average indirect effect (AIE) there exceeds the MLP AIE at the first subject token and at the
  further (non-subject, non-final) tokens over the same layers (over the eight facts; single facts
  vary, e.g. Gemma's Eiffel Tower puts more at the first subject token);
* attention restoration peaks at the **last (scored) token** in the later half of the layers.
"""

import json

import pytest

from neurotrace import Lab, LabSettings, TraceRequest, run_trace
from neurotrace.lab.facts import load_pack
from neurotrace.lab.model.access.tokens import token_ids
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.tracing.schema import TraceResults

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]
N_FACTS = 8


def science_facts(lab: Lab, model: str, n: int = N_FACTS) -> list:
    """Known facts with multi-token subjects, round-robin over relations (deterministic)."""
    with lab.cache.lease(ModelRef(model=model)) as lm:
        pool = [f for f in load_pack("known-facts").facts if f.known.get(model)
                and len(token_ids(lm.tokenizer, " " + f.clean_subject)) >= 2]
    by_relation: dict[str, list] = {}
    for fact in pool:
        by_relation.setdefault(fact.relation, []).append(fact)
    chosen, queues = [], list(by_relation.values())
    while len(chosen) < n and any(queues):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return chosen


def traced(tmp_path, model: str):
    if not catalog.is_installed(model):
        pytest.skip(f"{model} is not installed: run `neurotrace models fetch {model}`")
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    facts = science_facts(lab, model)
    result = run_trace(TraceRequest(models=[model], facts=facts, corruption={"kind": "swap"}), lab=lab)
    path = lab.store.artifact_path(result.run_id, "trace_results.json")
    return TraceResults.model_validate(json.loads(path.read_text(encoding="utf-8"))).models[model]


def aie_at(record, kind: str, category: str, layers: range) -> float:
    column = record.categories.index(category)
    return max(record.aie[kind][layer][column] for layer in layers)


@pytest.mark.parametrize("model", ["gemma-3-270m", "smollm2-135m-instruct"])
def test_mlp_matters_at_the_last_subject_token_and_attention_at_the_last_token_later(tmp_path, model):
    record = traced(tmp_path, model)
    assert record.n_known >= N_FACTS // 2, f"{model} knows only {record.n_known} of the traced facts"
    n = record.n_layers
    early_middle = range(0, (2 * n) // 3)
    table = {c: round(aie_at(record, "mlp", c, early_middle), 4) for c in record.categories}
    further = aie_at(record, "mlp", "further tokens", early_middle)
    last_subject = aie_at(record, "mlp", "last subject token", early_middle)
    assert last_subject > aie_at(record, "mlp", "first subject token", early_middle), table
    assert last_subject > further, table
    attn = record.aie["attn"]
    layer, column = max(((layer, c) for layer in range(n) for c in range(len(record.categories))),
                        key=lambda lc: attn[lc[0]][lc[1]])
    assert record.categories[column] == "scored token" and layer >= n // 2, (
        f"attention AIE peaks at layer {layer} / {n}, {record.categories[column]}")
