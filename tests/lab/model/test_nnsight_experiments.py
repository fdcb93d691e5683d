"""backend='nnsight' runs trace (exact, approx), clamp_sweep, capture and intervene with the numbers of
backend='hf': every saved number within 1e-5 relative, on a tiny model of every family and on SmolLM2,
with the forwards run by nnsight's trace (its trace is called; no PyTorch hook is attached)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from neurotrace import (
    CaptureRequest,
    ClampSweepRequest,
    InterveneRequest,
    TraceRequest,
    run_capture,
    run_clamp_sweep,
    run_intervene,
    run_trace,
)
from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import Reporter
from neurotrace.lab.seeding import make_generator
from neurotrace.lab.tracing.grids.grid import Corrupted, exact_grid
from neurotrace.lab.tracing.grids.nnsight_grid import exact_grid_nnsight
from neurotrace.lab.tracing.prepare import prepare_fact
from neurotrace.testing.tiny import DECODER_FAMILIES, build_tiny

RTOL = 1e-5
FLOOR = 1e-12  # |a - b| below this counts as equal (values of exactly zero on both sides)
# Differences of probabilities (restored - corrupted ...): their error is that of the probabilities
# (one float32 ulp of p, as the hf fast path differs from a full forward), so they are compared relative
# to the probabilities they subtract, taken as >= P_SCALE
DIFFERENCES = {"indirect", "approx_indirect", "aie", "aie_band", "effect", "max_effect", "band", "approx_check",
               "clean_minus_corrupt", "context_clean_minus_corrupt", "agreement"}
P_SCALE = 1e-3
FACT = {"id": "f", "template": "the capital city of {} is known for its", "clean_subject": "france",
        "target": "paris", "corrupt_subject": "japan"}
SKIP_KEYS = {"run_id", "seconds", "backend", "created", "fingerprint"}
RUN_FILES = {"trace": ["trace_results.json", "arrays/*.safetensors"],
             "clamp_sweep": ["clamp_results.json", "tables/generations.jsonl", "arrays/*.safetensors"],
             "capture": ["capture.json", "trace.jsonl", "arrays/index.npy", "arrays/states/*.npy"],
             "intervene": ["report.json"]}


def _load(path: Path):
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if path.suffix == ".npy":
        return np.load(path)
    return load_file(path)


def _max_rel(a, b, where: str = "", floor: float = FLOOR) -> float:
    """The largest relative difference between two saved values (strings and structure must match)."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        return max([_max_rel(a[k], b[k], f"{where}.{k}", max(floor, P_SCALE) if k in DIFFERENCES else floor)
                    for k in a if k not in SKIP_KEYS], default=0.0)
    if isinstance(a, list) and not all(isinstance(x, int | float) for x in a):
        assert len(a) == len(b), where
        return max([_max_rel(x, y, f"{where}[{i}]", floor) for i, (x, y) in enumerate(zip(a, b, strict=True))],
                   default=0.0)
    if isinstance(a, str | bool) or a is None:
        assert a == b, f"{where}: {a!r} != {b!r}"
        return 0.0
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert x.shape == y.shape, where
    both_nan = np.isnan(x) & np.isnan(y)
    diff = np.where(both_nan, 0.0, np.abs(x - y))
    rel = np.where(diff <= FLOOR, 0.0, diff / np.maximum(np.abs(y), floor))
    worst = float(rel.max()) if rel.size else 0.0
    if worst > RTOL:
        print(f"{where}: relative difference {worst:.3g}")
    return worst


def compare_runs(lab: Lab, tool: str, hf_run: str, ns_run: str) -> float:
    """Max relative difference over every saved result file of the two runs."""
    worst = 0.0
    for pattern in RUN_FILES[tool]:
        a_files = sorted(lab.store.run_dir(hf_run).glob(pattern))
        assert a_files, pattern
        for path in a_files:
            rel = path.relative_to(lab.store.run_dir(hf_run))
            worst = max(worst, _max_rel(_load(path), _load(lab.store.run_dir(ns_run) / rel), f"{tool}:{rel}"))
    return worst


class Spy:
    """Counts nnsight traces and PyTorch hooks registered on a model's modules."""

    def __init__(self, lm, monkeypatch) -> None:
        self.traces = self.torch_hooks = 0
        trace = lm.nnsight.trace

        def counted(*args, **kwargs):
            self.traces += 1
            return trace(*args, **kwargs)

        monkeypatch.setattr(lm.nnsight, "trace", counted)
        for module in lm.model.modules():
            for name in ("register_forward_hook", "register_forward_pre_hook"):
                monkeypatch.setattr(module, name, self._counting(getattr(module, name)))

    def _counting(self, register):
        def counted(*args, **kwargs):
            self.torch_hooks += 1
            return register(*args, **kwargs)
        return counted


def requests(model: str, kind: str, components: tuple[str, ...] = ("resid", "mlp", "attn"),
             samples: int = 2) -> dict[str, object]:
    """One request per experiment (the decoders' generation experiments only for causal LMs)."""
    fact = FACT if kind == "causal" else {**FACT, "template": "the capital city of {} is known for its [MASK] ."}
    noise = {"kind": "noise", "samples": samples}
    out = {"trace": TraceRequest(trace_unknown=True, models=[model], facts=[fact], corruption=noise, components=list(components)),
           "trace_approx": TraceRequest(trace_unknown=True, models=[model], facts=[fact], mode="approx", corruption=noise,
                                        components=list(components))}
    if kind == "causal":
        out |= {"clamp_sweep": ClampSweepRequest(model=model, neurons=["0:1", "1:2"], values=[-5, 5], controls=1,
                                                 prompts=["the cat is", "a dog of the"], max_new_tokens=4),
                "capture": CaptureRequest(model=model, sites=["blocks.*.hook_resid_post", "blocks.0.mlp.hook_post"],
                                          prompts=["the cat is big", "a dog"], max_new_tokens=3,
                                          interventions=[{"kind": "zero", "site": "blocks.0.hook_mlp_out",
                                                          "positions": [1]}]),
                "intervene": InterveneRequest(model=model, prompts=[{"prompt": "the capital of france is",
                                                                     "target": "paris"}],
                                              max_new_tokens=3, rank_features=0, controls=2,
                                              policies=[{"kind": "set_neurons", "neurons": ["1:3", "0:5"],
                                                         "value": 4.0}])}
    return out


RUN = {"trace": run_trace, "trace_approx": run_trace, "clamp_sweep": run_clamp_sweep, "capture": run_capture,
       "intervene": run_intervene}


def check_equal_backends(model: str, kind: str, lab: Lab, monkeypatch, **options) -> dict[str, float]:
    """Run every request with both backends; returns the max relative difference per experiment."""
    with lab.cache.lease(ModelRef(model=model, backend="nnsight")) as lm:
        spy = Spy(lm, monkeypatch)
    worst = {}
    for name, request in requests(model, kind, **options).items():
        hf = RUN[name](request, lab=lab)
        before = (spy.traces, spy.torch_hooks)
        ns = RUN[name](request.model_copy(update={"backend": "nnsight"}), lab=lab)
        assert spy.traces > before[0], f"{name}: nnsight ran no trace"
        if name != "intervene":  # intervene's feature ranking and controls attach hooks outside generation
            assert spy.torch_hooks == before[1], f"{name}: PyTorch hooks were attached under backend nnsight"
        worst[name] = compare_runs(lab, name.split("_approx")[0], hf.run_id, ns.run_id)
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("family", [*DECODER_FAMILIES, "bert"])
def test_every_experiment_gives_the_hf_numbers_through_nnsight_on_each_family(family, tmp_path, monkeypatch):
    model = str(build_tiny(family, tmp_path / family, n_layers=2, seed=1))
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    worst = check_equal_backends(model, "masked" if family == "bert" else "causal", lab, monkeypatch)
    print(family, worst)
    assert worst and max(worst.values()) <= RTOL, worst


@pytest.mark.realmodel
@pytest.mark.slow
def test_every_experiment_gives_the_hf_numbers_through_nnsight_on_smollm2(tmp_path, monkeypatch):
    if not catalog.is_installed("smollm2-135m-instruct"):
        pytest.skip("smollm2-135m-instruct is not installed (neurotrace models fetch smollm2-135m-instruct)")
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    worst = check_equal_backends("smollm2-135m-instruct", "causal", lab, monkeypatch, components=("mlp",),
                                 samples=1)
    print("smollm2", worst)
    # the hf backend's exact grid takes the decoder fast path, whose summation order differs from a full
    # forward by ~1e-5 relative on p ~ 1e-4 here; the nnsight grid equals the hf full forward exactly
    assert worst.pop("trace") <= 2 * RTOL and max(worst.values()) <= RTOL, worst
    with lab.cache.lease(ModelRef(model="smollm2-135m-instruct")) as hf, \
            lab.cache.lease(ModelRef(model="smollm2-135m-instruct", backend="nnsight")) as ns:
        prep = prepare_fact(hf, Fact(**FACT), 0)
        noise = torch.randn((1, prep.subject[1] - prep.subject[0], hf.d_model), generator=make_generator(0)) * 0.1
        corr = Corrupted(prep.ids, noise, prep.subject)
        full = exact_grid(hf, prep, corr, ["mlp"], 3, Reporter(), force_full=True)["mlp"]
        ours = exact_grid_nnsight(ns, prep, corr, ["mlp"], 3, Reporter())["mlp"]
    torch.testing.assert_close(ours, full, rtol=1e-6, atol=0)
