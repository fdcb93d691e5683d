"""SAEs: planted-direction recovery, determinism, save/load, fit_sae metrics and examples, input errors."""

import csv
import io

import numpy as np
import pytest
import torch

from neurotrace import CaptureRequest, FitSAERequest, run_capture, run_fit_sae
from neurotrace.lab.capture.store import load_trace_dataset
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.lab.sae.architectures.registry import SAEConfig, build_sae, load_sae
from neurotrace.lab.sae.run import CONFIG_FILE, METRICS_FILE
from neurotrace.lab.sae.schema import SAEMetrics
from neurotrace.lab.sae.train import RowSource, TrainSettings, train_sae
from neurotrace.lab.seeding import make_generator
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.records import read_back
from neurotrace.testing.tiny import word_prompts


def planted(n=2000, d=16, n_dir=12, p=0.12, seed=1):
    g = make_generator(seed)
    dirs = torch.randn(n_dir, d, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    active = (torch.rand(n, n_dir, generator=g) < p).float()
    x = (active * (torch.rand(n, n_dir, generator=g) * 2 + 0.5)) @ dirs + 0.01 * torch.randn(n, d, generator=g)
    return dirs, x.numpy()


def fit(arch, x, seed=0, steps=300, **kw):
    cfg = SAEConfig(architecture=arch, d_in=x.shape[1], d_sae=32, k=3 if arch == "topk" else None)
    sae = build_sae(cfg, **kw)
    train_sae(sae, RowSource(x, torch.device("cpu"), 1 << 30), TrainSettings(n_steps=steps, batch_size=256, lr=2e-2),
              make_generator(seed))
    return sae


def train_log(arch, x, d_sae=32, k=3, steps=300, scale=1.0, window=20, resample=False, **kw):
    cfg = SAEConfig(architecture=arch, d_in=x.shape[1], d_sae=d_sae, k=k if arch == "topk" else None,
                    input_scale=scale)
    sae = build_sae(cfg, **kw)
    log, since = train_sae(sae, RowSource(x, torch.device("cpu"), 1 << 30),
                           TrainSettings(n_steps=steps, batch_size=256, lr=2e-2, dead_feature_window=window,
                                         resample_dead=resample),
                           make_generator(0))
    return sae, float((since >= window).float().mean())


@pytest.mark.parametrize("arch,kw", [("topk", {}), ("relu", {"l1_coefficient": 0.3})])
def test_sae_recovers_planted_sparse_directions(arch, kw):
    dirs, x = planted()
    sae = fit(arch, x, **kw)
    dec = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    best = (dirs @ dec.T).max(1).values                       # each planted direction's closest feature
    assert best.min() > 0.9


def test_same_seed_gives_identical_weights_and_another_seed_differs():
    _, x = planted(n=400)
    a, b, c = (fit("topk", x, seed=s, steps=60) for s in (0, 0, 1))
    for name, t in a.tensors().items():
        assert torch.equal(t, b.tensors()[name])
    assert not torch.equal(a.W_dec, c.W_dec)


def test_topk_keeps_at_most_k_features_and_save_load_round_trips(tmp_path):
    _, x = planted(n=400)
    sae = fit("topk", x, steps=40)
    h = torch.from_numpy(x[:50])
    assert int((sae.encode(h) > 0).sum(1).max()) <= 3
    sae.save(tmp_path / "s")
    back = load_sae(tmp_path / "s")
    assert type(back) is type(sae) and back.cfg == sae.cfg
    assert torch.equal(back.decode(back.encode(h)), sae.decode(sae.encode(h)))
    assert torch.equal(load_sae(tmp_path / "s" / "sae.safetensors").W_enc, sae.W_enc)


def test_unknown_architecture_and_oversized_k_are_input_errors():
    with raises_lab_error(InputError) as err:
        build_sae(SAEConfig.model_construct(architecture="gated", d_in=4, d_sae=8, k=None))
    assert err.value.field == "architecture"
    with raises_lab_error(InputError) as err:
        build_sae(SAEConfig(architecture="topk", d_in=4, d_sae=8, k=9))
    assert err.value.field == "k"


@pytest.fixture(scope="module")
def captured(tmp_path_factory, tiny_gpt2):
    lab = Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("sae") / "runs"))
    prompts = word_prompts(24, 8, seed=0)
    prompts.append({"text": "the capital of france is", "target": "paris"})
    cap = run_capture(CaptureRequest(model=str(tiny_gpt2), sites=["blocks.*.hook_resid_post"], prompts=prompts),
                      lab=lab, reporter=NULL_REPORTER)
    return lab, cap


def test_fit_sae_reports_metrics_that_match_a_direct_computation(captured):
    lab, cap = captured
    site = "blocks.1.hook_resid_post"
    res = run_fit_sae(FitSAERequest(capture_run_id=cap.run_id, site=site, n_steps=150, batch_size=64, k=4,
                                    exclude_special=False, heldout_fraction=0), lab=lab, reporter=NULL_REPORTER)
    m = res.metrics
    sae = load_sae(lab.store.run_dir(res.run_id))
    h = torch.from_numpy(np.array(load_trace_dataset(lab, cap.run_id, site).states)).double()
    with torch.no_grad():
        a = sae.encode(h.float())
        err = (sae.decode(a).double() - h).pow(2)
    assert m["mse"] == pytest.approx(float(err.mean()), rel=1e-5)
    assert m["fvu"] == pytest.approx(float(err.sum() / (h - h.mean(0)).pow(2).sum()), rel=1e-5)
    assert m["l0"] == pytest.approx(float((a > 0).sum(1).double().mean()))
    assert m["dead_fraction_heldout"] == pytest.approx(float(((a > 0).sum(0) == 0).double().mean()))
    assert m["explained_variance"] == pytest.approx(1 - m["fvu"]) and m["ce_loss_score"] == m["loss_recovered"]
    for key in ("ce_clean", "ce_spliced", "ce_zero", "loss_recovered", "kl_spliced", "p_target_clean",
                "p_target_spliced"):
        assert m[key] is not None
    saved = read_back(lab, res.run_id, METRICS_FILE, SAEMetrics.model_validate)
    assert saved.fvu == m["fvu"] and saved.seed == 0 and saved.ce_loss_score == m["ce_loss_score"]
    assert cap.run_id in lab.store.manifest(res.run_id).inputs


def test_top_examples_list_each_features_largest_rows_with_token_and_context(captured):
    lab, cap = captured
    res = run_fit_sae(FitSAERequest(capture_run_id=cap.run_id, site="blocks.0.hook_resid_post", n_steps=50,
                                    architecture="relu", l1_coefficient=1e-3, n_examples=3, exclude_special=False,
                                    splice_steps=0), lab=lab, reporter=NULL_REPORTER)
    text = lab.store.artifact_path(res.run_id, "tables/top_examples.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    ds = load_trace_dataset(lab, cap.run_id, "blocks.0.hook_resid_post")
    sae = load_sae(lab.store.run_dir(res.run_id))
    with torch.no_grad():
        acts = sae.encode(torch.from_numpy(np.array(ds.states))).numpy()
    feature = int(rows[0]["feature"])
    mine = [r for r in rows if int(r["feature"]) == feature]
    expected = np.sort(acts[:, feature])[::-1][:len(mine)]
    np.testing.assert_allclose([float(r["activation"]) for r in mine], expected, rtol=1e-5)
    assert all(f"[[{r['token']}]]" in r["context"] for r in rows)
    assert "ce_clean" not in res.metrics


@pytest.mark.parametrize("architecture,splice_steps", [("topk", 1), ("relu", 0)])
def test_the_saved_config_and_metrics_round_trip_through_their_records_and_agree_with_the_result(
        captured, architecture, splice_steps):
    lab, cap = captured
    res = run_fit_sae(FitSAERequest(capture_run_id=cap.run_id, site="blocks.0.hook_resid_post", n_steps=4,
                                    batch_size=16, k=2, architecture=architecture, splice_steps=splice_steps,
                                    n_examples=1, seed=3), lab=lab, reporter=NULL_REPORTER)
    cfg = read_back(lab, res.run_id, CONFIG_FILE, SAEConfig.model_validate)
    assert (cfg.architecture, cfg.d_in, cfg.d_sae, cfg.site) == (architecture, res.d_in, res.d_sae, res.site)
    assert cfg.capture_run_id == cap.run_id and cfg.k == (2 if architecture == "topk" else None)
    rec = read_back(lab, res.run_id, METRICS_FILE, SAEMetrics.model_validate)
    assert (rec.verdict, rec.n_rows, rec.seed) == (res.verdict, res.n_rows, 3)
    assert res.metrics == {k: getattr(rec, k) for k in res.metrics}
    assert (rec.ce_loss_score is None) == (splice_steps == 0) and rec.splice_steps == (splice_steps or None)
    assert [e.step for e in rec.training][-1] == 3 and rec.final_loss == rec.training[-1].loss
    assert (rec.training[-1].l1 is None) == (architecture == "topk")


def test_fit_sae_input_errors_name_the_field(captured):
    lab, cap = captured
    cases = [({"site": None}, "site"), ({"site": "blocks.0.hook_mlp_out"}, "site"),
             ({"site": "blocks.0.hook_resid_post", "k": 500}, "k")]
    for kw, field in cases:
        with raises_lab_error(InputError) as err:
            run_fit_sae(FitSAERequest(capture_run_id=cap.run_id, n_steps=2, **kw), lab=lab, reporter=NULL_REPORTER)
        assert err.value.field == field


def test_our_metrics_match_saelens_on_the_same_weights():
    sae_lens = pytest.importorskip("sae_lens", reason="SAELens is not installed (or does not import here)")
    _, x = planted(n=500)
    ours = fit("relu", x, steps=30, l1_coefficient=0.3)
    cfg = sae_lens.StandardSAEConfig(d_in=16, d_sae=32, dtype="float32", device="cpu")
    theirs = sae_lens.StandardSAE(cfg)
    theirs.load_state_dict({k: v.clone() for k, v in ours.tensors().items()}, strict=False)
    h = torch.from_numpy(x)
    with torch.no_grad():
        torch.testing.assert_close(theirs.decode(theirs.encode(h)), ours(h), rtol=1e-5, atol=1e-6)


def test_normalisation_scales_training_rows_to_sqrt_d_in_and_decoding_restores_model_units():
    _, x = planted(n=600)
    mean_norm = float(np.linalg.norm(x, axis=1).mean())
    small, _ = train_log("topk", x, steps=80, scale=float(np.sqrt(16) / mean_norm))
    big, _ = train_log("topk", x * 100, steps=80, scale=float(np.sqrt(16) / (100 * mean_norm)))
    h = torch.from_numpy(x[:40])
    with torch.no_grad():                     # the same SAE in scaled space, so 100x inputs give 100x outputs
        torch.testing.assert_close(big(h * 100), small(h) * 100, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(big.encode(h * 100), small.encode(h), rtol=1e-3, atol=1e-4)
    f = torch.tensor([0, 1])
    torch.testing.assert_close(big.directions(f), small.directions(f) * 100, rtol=1e-3, atol=1e-3)


def test_explained_variance_uses_saelens_corrected_formula_on_heldout_rows_without_position_0(captured):
    lab, cap = captured
    site = "blocks.1.hook_resid_post"
    res = run_fit_sae(FitSAERequest(capture_run_id=cap.run_id, site=site, n_steps=60, batch_size=64, k=4,
                                    splice_steps=2), lab=lab, reporter=NULL_REPORTER)
    m = res.metrics
    ds = load_trace_dataset(lab, cap.run_id, site)
    special = lab.store.read_json(cap.run_id, "capture.json")["special_ids"]
    excluded = (ds.meta["pos"] == 0) | np.isin(ds.meta["token_id"], special)
    assert m["n_excluded_rows"] == int(excluded.sum()) > 0
    assert m["n_train_rows"] + m["n_heldout_rows"] == len(ds) - excluded.sum() and m["n_heldout_rows"] > 0
    sae = load_sae(lab.store.run_dir(res.run_id))
    # SAELens evals.py: 1 - E||x - x_hat||^2 / (E||x||^2 - ||E x||^2), over the held-out, included rows
    sae_cfg = read_back(lab, res.run_id, CONFIG_FILE, SAEConfig.model_validate)
    assert sae_cfg.input_scale == m["input_scale"] != 1.0
    saved = read_back(lab, res.run_id, METRICS_FILE, SAEMetrics.model_validate)
    held = np.flatnonzero(~excluded & np.isin(ds.meta["step_index"], saved.heldout_step_indices))
    assert len(held) == m["n_heldout_rows"]
    x = torch.from_numpy(np.array(ds.states)[held]).double()
    with torch.no_grad():
        resid = (sae(x.float()).double() - x).pow(2).sum(1)
    ev = 1 - resid.mean() / (x.pow(2).sum(1).mean() - x.mean(0).pow(2).sum())
    assert m["explained_variance"] == pytest.approx(float(ev), rel=1e-5, abs=1e-6)
    assert res.verdict in ("usable", "marginal", "unusable") and "Thresholds" in res.summary


def test_sae_verdicts_follow_the_stated_thresholds():
    from neurotrace.lab.sae.verdict import sae_verdict

    assert sae_verdict({"dead_fraction": 0.993, "explained_variance": 0.9999, "ce_loss_score": 0.1})[0] == "unusable"
    assert sae_verdict({"dead_fraction": 0.02, "explained_variance": 0.93, "ce_loss_score": 0.95}) == ("usable", [])
    verdict, why = sae_verdict({"dead_fraction": 0.3, "explained_variance": 0.9, "ce_loss_score": None})
    assert verdict == "marginal" and why == ["30% dead"]


def test_resampling_revives_dead_features_deterministically():
    _, x = planted(n=2000, d=16, n_dir=12)
    _, dead_plain = train_log("topk", x, d_sae=64, k=3, steps=600, window=20, resample=False)
    a, dead_resampled = train_log("topk", x, d_sae=64, k=3, steps=600, window=20, resample=True)
    b, _ = train_log("topk", x, d_sae=64, k=3, steps=600, window=20, resample=True)
    assert dead_resampled < dead_plain - 0.05      # 0.50 vs 0.58 since batches are gathered in row order
    assert torch.equal(a.W_dec, b.W_dec)


def test_auxk_revives_dead_topk_features_deterministically():
    _, x = planted(n=2000, d=16, n_dir=12)
    _, dead_plain = train_log("topk", x, d_sae=64, k=3, steps=600, window=20)
    a, dead_aux = train_log("topk", x, d_sae=64, k=3, steps=600, window=20, aux_coefficient=1 / 32)
    b, _ = train_log("topk", x, d_sae=64, k=3, steps=600, window=20, aux_coefficient=1 / 32)
    assert dead_aux < 0.1 < dead_plain - 0.3
    assert torch.equal(a.W_dec, b.W_dec)


def test_auxk_trains_dead_features_even_when_their_pre_activations_are_negative():
    cfg = SAEConfig(architecture="topk", d_in=4, d_sae=6, k=1)
    sae = build_sae(cfg, aux_coefficient=1.0, aux_k=2)
    sae.init_weights(make_generator(0))
    with torch.no_grad():
        sae.b_enc[3:] = -100.0                                 # features 3-5 never fire: dead, negative pre-acts
    dead = torch.tensor([False, False, False, True, True, True])
    loss, parts = sae.loss(torch.randn(8, 4, generator=make_generator(1)), dead=dead)
    loss.backward()
    assert parts["aux"] > 0 and sae.W_enc.grad[:, 3:].abs().sum() > 0 and sae.W_dec.grad[3:].abs().sum() > 0


def test_relu_sparsity_penalty_warms_up_linearly_and_ends_at_full_strength():
    _, x = planted(n=400)
    cfg = SAEConfig(architecture="relu", d_in=16, d_sae=32)
    sae = build_sae(cfg, l1_coefficient=1.0)
    seen = []
    original = sae.loss
    sae.loss = lambda h, dead=None: (seen.append(sae.penalty_scale), original(h, dead))[1]
    train_sae(sae, RowSource(x, torch.device("cpu"), 1 << 30), TrainSettings(n_steps=20, batch_size=64,
                                                                               warm_up_steps=10), make_generator(0))
    assert seen[:10] == pytest.approx([(i + 1) / 10 for i in range(10)]) and seen[10:] == [1.0] * 10
    assert sae.penalty_scale == 1.0


def test_massive_activation_rows_are_left_out_like_special_tokens_and_counted(tmp_path, tiny_gpt2):
    """A few rows with 50x the median norm (planted in the captured states, as SmolLM2's first-content
    tokens carry): without the rule they dominate the variance; with exclude_special they are counted in
    n_massive_rows and left out of training and metrics; with exclude_special=false nothing is left out."""
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    site = "blocks.1.hook_resid_post"
    cap = run_capture(CaptureRequest(model=str(tiny_gpt2), sites=[site], prompts=word_prompts(12, 8, seed=3)),
                      lab=lab, reporter=NULL_REPORTER)
    path = lab.store.run_dir(cap.run_id) / "arrays" / "states" / f"{site}.npy"
    states = np.load(path)
    ds = load_trace_dataset(lab, cap.run_id, site)
    candidates = np.flatnonzero(ds.meta["pos"] > 0)
    planted_rows = candidates[[3, 17, 40]]
    states[planted_rows] *= 50.0
    np.save(path, states)
    request = {"capture_run_id": cap.run_id, "site": site, "n_steps": 30, "batch_size": 64, "k": 4, "splice_steps": 1}
    m = run_fit_sae(FitSAERequest(**request), lab=lab, reporter=NULL_REPORTER).metrics
    special = lab.store.read_json(cap.run_id, "capture.json")["special_ids"]
    usual = int(((ds.meta["pos"] == 0) | np.isin(ds.meta["token_id"], special)).sum())
    assert m["n_massive_rows"] == 3 and m["n_excluded_rows"] == usual + 3
    assert m["n_train_rows"] + m["n_heldout_rows"] == len(ds) - usual - 3
    norms = np.linalg.norm(states, axis=1)
    assert norms[planted_rows].min() > m["massive_norm_limit"] > np.delete(norms, planted_rows).max()
    off = run_fit_sae(FitSAERequest(**request, exclude_special=False), lab=lab, reporter=NULL_REPORTER).metrics
    assert off["n_excluded_rows"] == 0 and off["n_massive_rows"] == 0 and off["massive_norm_limit"] is None
