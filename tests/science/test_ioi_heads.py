"""The science check for intervene's verdict: on gemma-3-270m, zeroing the IOI name-mover heads 11:3 and 12:1
cuts the target-foil logit difference far more than zeroing other heads of the same layers, and the verdict
says `causal` against those same-layer heads (random same-norm directions once called it "not above control").

Measured 2026-12-07 on this CPU build (4 prompts, 3 controls per family): the heads lower logit(IO) - logit(S)
by 2.58 on average (62% of the baseline difference); the same-layer controls move it the other way (+0.33 to
+2.5) and the random directions by at most 0.33.
"""

import pytest

from neurotrace import InterveneRequest, Lab, LabSettings, run_intervene
from neurotrace.lab.model.weights import catalog

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]
MODEL = "gemma-3-270m"
IOI = [("When Mary and John went to the store, John gave a drink to", "Mary", "John"),
       ("When John and Mary went to the park, Mary gave a ball to", "John", "Mary"),
       ("After Alice and Bob had lunch at the cafe, Bob handed the bill to", "Alice", "Bob"),
       ("After Bob and Alice had lunch at the cafe, Alice handed the bill to", "Bob", "Alice")]


def test_name_mover_heads_beat_same_layer_heads_on_the_logit_difference(tmp_path):
    if not catalog.is_installed(MODEL):
        pytest.skip(f"{MODEL} is not installed: run `neurotrace models fetch {MODEL}`")
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    res = run_intervene(InterveneRequest(
        model=MODEL, max_new_tokens=0, controls=3, rank_features=0,
        prompts=[{"prompt": p, "target": t, "foil": f} for p, t, f in IOI],
        policies=[{"kind": "zero_heads", "layer": 11, "heads": [3]}, {"kind": "zero_heads", "layer": 12, "heads": [1]}]),
        lab=lab)
    assert res.metric == "logit(target) - logit(foil)" and res.direction == "lowers"
    assert res.control_family == "same-layer heads" and res.verdict == "causal"
    assert res.effect < -1.0 and res.effect_fraction < -0.3
    assert res.control_effect_max < abs(res.effect) / 2
    assert not res.damage.destructive
