"""fit_sae's defaults on a real mid-layer residual (SmolLM2-135M-Instruct, layer 15 of 30): few dead
TopK features (AuxK + resampling) and a sparse ReLU SAE (L1 5 on normalised inputs).

Rows: every pack's facts as answered sentences, four to a paragraph (~1,900 rows, BOS skipped).
Only the training length is shortened from the defaults (600 steps of 128 rows), to fit a minute.
"""

import pytest

from neurotrace import CaptureRequest, FitSAERequest, run_capture, run_fit_sae
from neurotrace.lab.facts import list_packs, load_pack
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights import catalog

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]
SMOL = "smollm2-135m-instruct"
SHORT = {"n_steps": 600, "batch_size": 128, "splice_steps": 0}


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    if not catalog.is_installed(SMOL):
        pytest.skip(f"{SMOL} is not installed: run `neurotrace models fetch {SMOL}`")
    lab = Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("sae-real") / "runs"))
    sentences = [f"{f.prompt()} {f.target}." for pack in list_packs() for f in load_pack(pack).facts]
    paragraphs = [" ".join(sentences[i:i + 4]) for i in range(0, len(sentences), 4)]
    cap = run_capture(CaptureRequest(model=SMOL, sites=["blocks.15.hook_resid_post"], prompts=paragraphs,
                                     skip_bos=True), lab=lab)
    return lab, cap.run_id


def test_default_topk_sae_on_a_real_residual_keeps_dead_features_under_ten_percent(residual):
    lab, run_id = residual
    res = run_fit_sae(FitSAERequest(capture_run_id=run_id, **SHORT), lab=lab)
    m = res.metrics
    assert m["n_train_rows"] > 1500 and res.d_sae == 4 * 576
    assert m["dead_fraction"] <= 0.10, res.summary
    assert 0 < m["l0"] <= 8 and m["explained_variance"] > 0.3
    assert res.summary.startswith(f"SAE verdict {res.verdict}: {m['dead_fraction']:.0%} dead")


def test_default_relu_sae_on_a_real_residual_is_sparse(residual):
    lab, run_id = residual
    res = run_fit_sae(FitSAERequest(capture_run_id=run_id, architecture="relu", **SHORT), lab=lab)
    m = res.metrics
    assert 1 <= m["l0"] <= 0.05 * res.d_sae and m["dead_fraction"] <= 0.10, res.summary
    assert m["explained_variance"] > 0.3
