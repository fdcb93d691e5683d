"""fit_sae's splice runs the shared destructive-edit check (issue 25 item 4, the SAE splice): a splice that
breaks fact-gpt2 on neutral text reads `destructive`; an exact reconstruction changes nothing."""

import pytest
import torch

from neurotrace import CaptureRequest, FitSAERequest, run_capture, run_fit_sae
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.embedded import embedded_model_path
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.sae.architectures.registry import SAEConfig, build_sae
from neurotrace.lab.sae.evaluate import splice_damage
from neurotrace.lab.sae.run import METRICS_FILE
from neurotrace.lab.sae.schema import SAEMetrics
from neurotrace.testing.records import read_back

SITE = "blocks.3.hook_resid_post"
PROMPTS = ["The capital of France is Paris .", "The capital of Japan is Tokyo .",
           "The currency of India is the rupee .", "SQL injection is a web attack ."] * 3


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    if embedded_model_path("fact-gpt2") is None:
        pytest.skip("embedded fact-gpt2 is absent")
    lab = Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("sae-damage") / "runs"))
    return lab, run_capture(CaptureRequest(model="fact-gpt2", sites=[SITE], prompts=PROMPTS), lab=lab)


def test_a_splice_that_breaks_the_model_reads_destructive_and_a_barely_trained_one_does_not(captured):
    lab, cap = captured
    base = dict(capture_run_id=cap.run_id, batch_size=32, k=8, splice_steps=4)
    broken = run_fit_sae(FitSAERequest(**base, n_steps=20, lr=3.0, b_dec_init="zeros"), lab=lab)   # blown up
    assert broken.damage is not None and broken.damage.destructive and broken.verdict == "destructive"
    assert broken.damage.kl > 1 and broken.damage.n_positions > 0 and "destructive (" in broken.summary
    assert read_back(lab, broken.run_id, METRICS_FILE, SAEMetrics.model_validate).damage == broken.damage
    assert "Refit" in broken.next
    mild = run_fit_sae(FitSAERequest(**base, n_steps=1), lab=lab)          # about the mean: a small change
    assert mild.damage is not None and not mild.damage.destructive and mild.verdict != "destructive"
    assert "not destructive" in mild.summary
    assert run_fit_sae(FitSAERequest(**{**base, "splice_steps": 0}, n_steps=1), lab=lab).damage is None


def test_an_exact_reconstruction_spliced_in_changes_nothing_and_its_negation_is_destructive(captured):
    lab, _ = captured
    d = 128
    sae = build_sae(SAEConfig(architecture="relu", d_in=d, d_sae=2 * d, site=SITE))
    with torch.no_grad():                                     # relu(x) - relu(-x) = x
        sae.W_enc.copy_(torch.cat([torch.eye(d), -torch.eye(d)], 1))
        sae.W_dec.copy_(torch.cat([torch.eye(d), -torch.eye(d)], 0))
    with lab.cache.lease(ModelRef(model="fact-gpt2")) as lm:
        steps = [{"token_ids": lm.tokenizer(p).input_ids} for p in PROMPTS[:2]]
        exact = splice_damage(lm, sae, SITE, steps)
        with torch.no_grad():
            sae.W_dec.mul_(-1)
        negated = splice_damage(lm, sae, SITE, steps)
    assert exact.kl < 1e-6 and exact.top1_changed == 0 and not exact.destructive
    assert negated.destructive and negated.kl > 1
