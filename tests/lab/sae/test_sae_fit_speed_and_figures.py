"""fit_sae: the batch is capped at the rows there are, the batched splice equals one forward per condition,
an unusable SAE on few rows says to capture more, and plot redraws a fit_sae run's figure."""


import numpy as np
import pytest
import torch

from neurotrace import CaptureRequest, FitSAERequest, run_capture, run_fit_sae
from neurotrace.lab.capture.store import load_trace_dataset
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.plotting import PlotRequest, run_plot
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.lab.sae.architectures.registry import SAEConfig, build_sae
from neurotrace.lab.sae.evaluate import splice_metrics
from neurotrace.lab.sae.run import METRICS_FILE
from neurotrace.lab.sae.schema import SAEMetrics
from neurotrace.lab.sae.train import RowSource, TrainSettings, batch_indices, train_sae
from neurotrace.lab.seeding import make_generator
from neurotrace.testing.records import read_back
from neurotrace.testing.tiny import word_prompts

SITE = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def captured(tmp_path_factory, tiny_gpt2):
    lab = Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("sae_fast") / "runs"))
    prompts = word_prompts(6, 6, seed=1)
    cap = run_capture(CaptureRequest(model=str(tiny_gpt2), sites=[SITE], prompts=prompts), lab=lab,
                      reporter=NULL_REPORTER)
    return lab, cap


def test_a_batch_larger_than_the_data_is_capped_at_the_rows_and_trains_as_that_batch_would():
    assert [len(b) for b in batch_indices(10, 256, 3, make_generator(0))] == [10, 10, 10]
    x = np.random.default_rng(0).standard_normal((10, 8)).astype(np.float32)
    weights = []
    for batch_size in (256, 10):
        sae = build_sae(SAEConfig(architecture="topk", d_in=8, d_sae=16, k=2))
        train_sae(sae, RowSource(x, torch.device("cpu"), 1 << 30), TrainSettings(n_steps=20, batch_size=batch_size),
                  make_generator(0))
        weights.append(sae.W_dec.detach().clone())
    assert torch.equal(*weights)


def test_the_batched_splice_equals_one_forward_per_condition(captured):
    lab, cap = captured
    ds = load_trace_dataset(lab, cap.run_id, SITE)
    sae = build_sae(SAEConfig(architecture="topk", d_in=int(ds.states.shape[1]), d_sae=32, k=4))
    sae.init_weights(make_generator(0))
    steps = ds.steps[:3]
    with lab.cache.lease(ModelRef(model=ds.info.model)) as lm, torch.no_grad():
        got = splice_metrics(lm, sae, SITE, steps, lambda t: 0)
        ce = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
        for step in steps:
            ids = torch.tensor([step["token_ids"]])
            for name, fn in (("clean", None), ("spliced", lambda a, site: sae(a)), ("zero", lambda a, site: a * 0)):
                with hooked(lm.model, lm.adapter, {SITE: fn} if fn else {}):
                    logits = lm.model(input_ids=ids).logits[0, :-1].float()
                ce[name] += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
    n_tok = sum(len(s["token_ids"]) - 1 for s in steps)
    for name in ce:
        assert got[f"ce_{name}"] == pytest.approx(ce[name] / n_tok, rel=1e-5)
    assert got["ce_zero"] > got["ce_clean"]


def test_an_unusable_sae_on_few_rows_says_to_capture_more_prompts(captured):
    lab, cap = captured
    res = run_fit_sae(FitSAERequest(capture_run_id=cap.run_id, site=SITE, d_sae=1024, k=4, n_steps=3,
                                    splice_steps=0), lab=lab, reporter=NULL_REPORTER)
    n = res.metrics["n_train_rows"]
    assert res.verdict == "unusable" and n < 1024
    assert f"only {n} training rows" in res.next and "capture more prompts" in res.next
    assert "exclude_special=true" not in res.next and "expected_norm" not in res.next


def test_plot_redraws_a_fit_sae_runs_training_figure_from_its_metrics(captured):
    lab, cap = captured
    res = run_fit_sae(FitSAERequest(capture_run_id=cap.run_id, site=SITE, d_sae=16, k=2, n_steps=200,
                                    splice_steps=0), lab=lab, reporter=NULL_REPORTER)
    rec = read_back(lab, res.run_id, METRICS_FILE, SAEMetrics.model_validate)
    assert len(rec.training) > 50 and (rec.site, rec.d_sae) == (SITE, 16)
    assert rec.model in lab.store.manifest(res.run_id).models
    assert rec.never_fired + sum(b.n_features for b in rec.fire_density) == 16
    plot = run_plot(PlotRequest(run_id=res.run_id), lab=lab, reporter=NULL_REPORTER)
    assert plot.kinds == ["training"] and plot.source_tool == "fit_sae" and len(plot.figures) == 1
    assert lab.store.artifact_path(plot.run_id, "figures/training.png").stat().st_size > 0
