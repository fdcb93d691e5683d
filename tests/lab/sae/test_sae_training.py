"""SAE training at scale: streaming equals in-memory, planted features are recovered (and a shuffled control
is not), every SAELens architecture trains, transcoders map input to output, sparse TopK gradients equal the
dense ones, SAELens-style initialisation and schedules."""

import numpy as np
import pytest
import torch

from neurotrace.lab.sae.architectures.base import SAEConfig
from neurotrace.lab.sae.architectures.registry import build_sae
from neurotrace.lab.sae.architectures.sparse import sparse_decode, topk_latents
from neurotrace.lab.sae.export import dictionary_from_sae
from neurotrace.lab.sae.train import RowSource, TrainSettings, lr_factor, train_sae
from neurotrace.lab.seeding import make_generator

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    """These fits are tiny: one thread (a second only waits on the first, badly so on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic(n=3000, d=16, n_feat=24, p=0.06, seed=0):
    """SynthSAEBench-style data: each row a sparse non-negative mix of ``n_feat`` unit ground-truth
    directions (each active with probability ``p``, magnitude in [0.5, 1.5]) plus small noise."""
    g = make_generator(seed)
    feats = torch.randn(n_feat, d, generator=g)
    feats /= feats.norm(dim=1, keepdim=True)
    z = (torch.rand(n, n_feat, generator=g) < p).float() * (torch.rand(n, n_feat, generator=g) + 0.5)
    x = z @ feats + 0.01 * torch.randn(n, d, generator=g)
    return feats, z, x.numpy().astype(np.float32)


def shuffled(x, seed=0):
    """Each column permuted on its own: the same marginals, no shared features."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(col) for col in x.T], axis=1).astype(np.float32)


def recovered(feats, w_dec):
    """(mean over ground-truth features of the best cosine with any decoder row (mean max cosine), share of
    ground-truth features some decoder row matches at cosine > 0.9)."""
    dec = w_dec / w_dec.norm(dim=1, keepdim=True)
    best = (feats @ dec.T).max(1).values
    return float(best.mean()), float((best > 0.9).float().mean())


def fit(x, arch, d_sae=48, steps=250, k=3, seed=0, source=None, **kw):
    cfg = SAEConfig(architecture=arch, d_in=x.shape[1], d_sae=d_sae, k=k if "topk" in arch else None)
    sae = build_sae(cfg, **kw)
    src = source or RowSource(x, CPU, 1 << 30)
    train_sae(sae, src, TrainSettings(n_steps=steps, batch_size=256, lr=1e-2, dead_feature_window=100,
                                      warm_up_steps=steps // 20), make_generator(seed))
    return sae


@pytest.mark.parametrize("arch,kw", [("topk", {}), ("batchtopk", {}), ("jumprelu", {"l0_coefficient": 0.2, "steps": 500}),
                                     ("relu", {"l1_coefficient": 0.3})])
def test_each_architecture_recovers_planted_features_and_a_shuffled_control_does_not(arch, kw):
    feats, _, x = synthetic()
    sae = fit(x, arch, **kw)
    control = fit(shuffled(x), arch, **kw)
    (got, share), (ctrl, ctrl_share) = recovered(feats, sae.W_dec.detach()), recovered(feats, control.W_dec.detach())
    assert got > 0.9 and share > 0.8, (arch, got, share)
    assert ctrl_share < 0.15 and got - ctrl > 0.2, (arch, ctrl, ctrl_share)


def test_batchtopk_and_jumprelu_infer_with_thresholds_as_saelens_saves_them():
    _, _, x = synthetic()
    for arch, kw in (("batchtopk", {}), ("jumprelu", {"l0_coefficient": 0.2, "steps": 500})):
        sae = fit(x, arch, **{"steps": 300, **kw}).eval()
        h = torch.from_numpy(x[:500])
        d = dictionary_from_sae(sae)
        assert d.cfg.architecture == "jumprelu" and d.threshold is not None and float(d.threshold.min()) > 0
        with torch.no_grad():
            torch.testing.assert_close(d.encode(h), sae.encode(h), atol=1e-5, rtol=1e-5)
            l0 = float((sae.encode(h) > 0).float().sum(1).mean())
        assert 0.5 < l0 < 12, (arch, l0)


def test_streaming_from_a_memory_mapped_array_equals_the_in_memory_fit(tmp_path):
    _, _, x = synthetic(n=3000)
    np.save(tmp_path / "states.npy", x.astype(np.float16))
    mm = np.load(tmp_path / "states.npy", mmap_mode="r")
    index = np.arange(0, 3000, 3)                                    # a subset, as a train split is
    streamed = RowSource(mm, CPU, 1 << 30, index=index, stream=True)
    in_memory = RowSource(mm, CPU, 1 << 30, index=index, stream=False)
    assert streamed.streaming and streamed.tensor is None and not in_memory.streaming
    a = fit(x, "topk", steps=60, source=streamed)
    b = fit(x, "topk", steps=60, source=in_memory)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_streaming_is_the_default_for_a_large_memory_mapped_array(tmp_path):
    arr = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(70_000, 1024))
    del arr
    mm = np.load(tmp_path / "big.npy", mmap_mode="r")                 # 287 MB on disk, never read whole
    assert RowSource(mm, CPU, 2 << 30).streaming
    assert not RowSource(np.zeros((10, 4), np.float32), CPU, 2 << 30).streaming


def test_sparse_topk_gradients_equal_the_dense_computation():
    g = make_generator(0)
    x = torch.randn(64, 16, generator=g)
    params = [torch.randn(16, 48, generator=g), torch.randn(48, generator=g) * 0.1, torch.randn(48, 16, generator=g),
              torch.randn(16, generator=g) * 0.1]
    grads = []
    for sparse in (True, False):
        We, be, Wd, bd = (p.clone().requires_grad_() for p in params)
        xc = x - bd
        if sparse:
            v, idx, _ = topk_latents(xc, We, be, 4)
            r = sparse_decode(v.relu(), idx, Wd) + bd
        else:
            pre = xc @ We + be
            vals, idx = pre.topk(4, dim=-1)
            r = torch.zeros_like(pre).scatter(-1, idx, vals.relu()) @ Wd + bd
        (r - x).pow(2).sum(-1).mean().backward()
        grads.append([p.grad for p in (We, be, Wd, bd)])
    for s, d in zip(*grads, strict=True):
        torch.testing.assert_close(s, d, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("skip", [False, True])
def test_a_transcoder_learns_its_output_site_from_its_input_and_a_shuffled_target_does_not(skip):
    g = make_generator(2)
    feats_in, z, x = synthetic(n=5000, d=24, n_feat=30)
    out_dirs = torch.randn(30, 12, generator=g)
    y = z @ out_dirs
    if skip:
        y = y + torch.from_numpy(x) @ torch.randn(24, 12, generator=g) * 0.5
    y = y.numpy().astype(np.float32)

    def ev(target):
        cfg = SAEConfig(architecture="topk", d_in=24, d_sae=60, k=4, site="blocks.0.ln2.hook_normalized",
                        out_site="blocks.0.hook_mlp_out", d_out=12, skip=skip)
        tc = build_sae(cfg)
        src, tgt = RowSource(x[:4000], CPU, 1 << 30), RowSource(target[:4000], CPU, 1 << 30)
        train_sae(tc, src, TrainSettings(n_steps=500, batch_size=256, lr=1e-2, dead_feature_window=100), make_generator(0),
                  target=tgt)
        with torch.no_grad():
            pred = tc(torch.from_numpy(x[4000:]))
        held = torch.from_numpy(target[4000:])
        return 1 - float((pred - held).pow(2).sum() / (held - held.mean(0)).pow(2).sum()), tc

    good, tc = ev(y)
    bad, _ = ev(y[np.random.default_rng(0).permutation(len(y))])
    assert good > 0.9 and bad < 0.2, (good, bad)
    d = dictionary_from_sae(tc)
    assert d.cfg.transcoder and d.cfg.skip == skip and d.cfg.out_site == "blocks.0.hook_mlp_out"
    h = torch.from_numpy(x[:50])
    torch.testing.assert_close(d(h), tc(h).detach(), atol=1e-4, rtol=1e-4)


def test_geometric_median_init_resists_outliers_and_the_lr_schedule_warms_and_decays():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8)).astype(np.float32) + 3.0
    x[:100] += 500.0                                                  # 5% far outliers
    src = RowSource(x, CPU, 1 << 30)
    assert float((src.geometric_median() - 3.0).abs().max()) < 0.5 < float((src.mean() - 3.0).abs().max())
    s = TrainSettings(n_steps=100, lr_warm_up_steps=10, lr_decay_steps=20)
    f = [lr_factor(i, s) for i in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[50] == 1.0 and f[99] == pytest.approx(0.05)
    assert all(a <= b for a, b in zip(f[:10], f[1:11], strict=True))
