"""patch in bfloat16: agreement with float32 measured on recomputed cells, a planted difference found and the
changed reading flagged, float32 where bfloat16 is not faster."""

import numpy as np
import pytest
import torch

from neurotrace.lab.model.runtime.precision import ENV_FAST
from neurotrace.lab.patching import run as patch_run
from neurotrace.lab.patching.run import run_patch
from neurotrace.lab.patching.schema import PatchRequest
from neurotrace.testing.tiny import build_tiny

CLEAN, CORRUPT = "the capital of france is", "the capital of spain is"
KINDS = ["resid_pre", "attn_out", "mlp_out", "head_out"]


pytestmark = pytest.mark.usefixtures("fast_bfloat16")  # the agreement is under test, not this CPU's speed


def _grids(lab, result):
    rec = lab.store.read_json(result.run_id, "patch_results.json")
    return {k: torch.tensor(np.array(v, dtype=float), dtype=torch.float32) for k, v in rec["values"].items()}


def _both(lab, model, **fields):
    return {p: run_patch(PatchRequest(model=model, clean=CLEAN, corrupt=CORRUPT, target="paris", contrast="madrid",
                                      components=KINDS, precision=p, **fields), lab=lab)
            for p in ("float32", "bfloat16")}


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3_text"])
def test_bfloat16_patch_agrees_with_float32_within_the_reported_bound(family, tmp_path, lab):
    model = str(build_tiny(family, tmp_path / family, n_layers=3, seed=3))
    runs = _both(lab, model)
    g32, g16 = _grids(lab, runs["float32"]), _grids(lab, runs["bfloat16"])
    whole = max(float((g32[k] - g16[k]).abs().max()) for k in KINDS)
    agree = runs["bfloat16"].precision_agreement
    assert runs["float32"].precision_agreement is None
    assert 0 < whole < 0.05 and agree.max_abs_diff <= max(whole, abs(runs["float32"].metric_clean
                                                                       - runs["bfloat16"].metric_clean)) + 1e-6
    assert agree.quantity == "logit difference" and agree.n == 2 + 2 * len(KINDS) + 6
    # random tiny models have near ties among their top cells: a flip among them is reported, never hidden
    said = "would change" if agree.changed else "no reading would change"
    assert said in runs["bfloat16"].summary and (agree.rerun is not None) == bool(agree.changed)


def test_fact_gpt2_bfloat16_patch_keeps_its_most_restoring_cells(lab):
    runs = {p: run_patch(PatchRequest(model="fact-gpt2", clean="The capital of France is",
                                      corrupt="The capital of Japan is", metric="p_target", precision=p), lab=lab)
            for p in ("float32", "bfloat16")}
    top32, top16 = ([(c.component, c.layer, c.position) for c in r.top[:3]] for r in runs.values())
    assert top32 == top16 and runs["bfloat16"].precision_agreement.max_abs_diff < 0.02


def test_a_planted_difference_is_found_and_the_changed_reading_flagged(lab, tmp_path, monkeypatch):
    model = str(build_tiny("llama", tmp_path / "llama", n_layers=3, seed=3))
    real = patch_run.patch_cells

    def planted(lm, corrupt, cells, *args, **kwargs):
        values = real(lm, corrupt, cells, *args, **kwargs)
        if lm.ref.dtype == "bfloat16":
            mlp = [i for i, c in enumerate(cells) if c.site == "blocks.2.hook_mlp_out" and c.pos == 1]
            values[mlp] += 50.0          # one quiet mlp cell made the most restoring one
        return values

    monkeypatch.setattr(patch_run, "patch_cells", planted)
    result = run_patch(PatchRequest(model=model, clean=CLEAN, corrupt=CORRUPT, target="paris", contrast="madrid",
                                    components=KINDS, precision="bfloat16"), lab=lab)
    agree = result.precision_agreement
    assert result.top[0].component == "mlp_out" and result.top[0].layer == 2 and result.top[0].position == 1
    assert agree.max_abs_diff == pytest.approx(50.0, abs=0.5) and agree.worst.startswith("mlp_out L2")
    assert any(c.startswith("most restoring cell") for c in agree.changed)
    assert "would change" in result.summary and "precision='float32'" in result.summary


def test_bfloat16_on_a_slow_cpu_patches_in_float32_with_a_note(lab, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_FAST, "0")
    model = str(build_tiny("llama", tmp_path / "llama", n_layers=2, seed=3))
    runs = _both(lab, model)
    assert runs["bfloat16"].precision_agreement is None and "ran in float32" in runs["bfloat16"].summary
    g32, g16 = _grids(lab, runs["float32"]), _grids(lab, runs["bfloat16"])
    assert all(torch.equal(g32[k], g16[k]) for k in KINDS)
