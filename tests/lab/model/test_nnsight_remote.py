"""Remote execution through NDIF: the request nnsight would send is built and checked locally; whole
remote traces run as non-blocking jobs on a local stand-in for NDIF (:mod:`neurotrace.testing.fake_ndif`,
which runs them on its own model with nnsight's server-side deserialisation); one opt-in test sends a
trace to NDIF when NDIF_API_KEY is set."""

import io
import json
import os

import pytest
import torch
import zstandard

from neurotrace import CaptureRequest, TraceRequest, run_trace
from neurotrace.lab.errors import Cancelled, InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.runtime.ndif import (
    DEFAULT_NDIF_URL,
    HttpTransport,
    build_remote_request,
    check_execution,
    configure_remote,
    model_key,
    ndif_config,
    remote_backend,
    remote_model,
)
from neurotrace.lab.model.runtime.nnsight_backend import traced_probs
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.progress import Reporter
from neurotrace.testing.fake_ndif import FakeNdif

HUB_ID = "openai-community/gpt2"  # the hosted model the tiny GPT-2 stands in for (same module names)


@pytest.fixture(scope="module")
def lm(tiny_gpt2):
    return load(ModelRef(model=str(tiny_gpt2), backend="nnsight"))


def test_ndif_config_comes_from_the_environment_and_never_shows_the_key():
    config = ndif_config({"NEUROTRACE_NDIF_URL": "https://ndif.example", "NDIF_API_KEY": "sekret-123"})
    assert config.url == "https://ndif.example" and config.api_key == "sekret-123"
    assert "sekret" not in repr(config)
    assert ndif_config({}).url == DEFAULT_NDIF_URL and ndif_config({}).api_key is None


def test_an_ndif_url_that_is_not_http_is_refused_naming_the_setting():
    with pytest.raises(InputError) as err:
        ndif_config({"NEUROTRACE_NDIF_URL": "file:///etc/passwd"})
    assert "NEUROTRACE_NDIF_URL" in str(err.value)


def test_remote_without_a_key_is_refused_before_anything_is_sent(lm):
    with pytest.raises(InputError) as err:
        remote_backend(lm, ndif_config({}), repo_id=HUB_ID)
    assert "NDIF_API_KEY" in str(err.value)


def test_a_local_directory_has_no_ndif_model_key(lm):
    with pytest.raises(InputError) as err:
        model_key(lm)
    assert err.value.field == "remote"


def test_the_remote_request_names_the_hub_model_and_carries_only_the_intervention(lm):
    clean = torch.full((lm.d_model,), 0.123456789)

    def restore(act, site):
        out = act.clone()
        out[0, 1] = clean
        return out

    envelope, payload = build_remote_request(lm, torch.tensor([[1, 2, 3, 4]]), 3, 5,
                                             {"blocks.1.hook_resid_post": restore}, repo_id=HUB_ID)
    meta = json.loads(envelope)
    assert json.loads(meta["model_key"].split(":", 1)[1])["repo_id"] == HUB_ID
    assert meta["session_id"] == "" and meta["env"] == {}
    raw = zstandard.ZstdDecompressor().decompress(payload) if meta["compress"] else payload
    assert clean.numpy().tobytes() in raw                     # the clean state it restores travels
    weight = lm.model.lm_head.weight[:4].contiguous().numpy().tobytes()
    assert weight not in raw                                  # the model's weights do not
    assert len(raw) < lm.nbytes / 4
    assert b"wrapper.output.logits" in raw and b"softmax" in raw  # only p(target) is saved and sent back


@pytest.mark.skipif(not os.environ.get("NDIF_API_KEY"), reason="needs NDIF_API_KEY (opt-in, sends to NDIF)")
def test_a_trace_runs_on_ndif_and_returns_one_probability_per_row(lm):
    backend = remote_backend(lm, ndif_config(), repo_id=HUB_ID)
    probs = traced_probs(lm, torch.tensor([[464, 3139, 286, 4881, 318]]), 4, 6342,
                         {"blocks.3.hook_resid_post": lambda act, site: act * 1.0}, backend=backend)
    assert probs.shape == (1,) and 0.0 <= float(probs[0]) <= 1.0


# -- remote runs: the request gate, and non-blocking jobs through a local stand-in for NDIF ----------

FACT = {"id": "f", "template": "the capital city of {} is known for its", "clean_subject": "france",
        "target": "paris", "corrupt_subject": "japan"}


def _trace(model: str, **extra) -> TraceRequest:
    return TraceRequest(trace_unknown=True, models=[model], facts=[FACT], corruption={"kind": "noise", "samples": 2},
                        noise_std_from=0.05, **extra)


@pytest.fixture
def ndif(tiny_gpt2, monkeypatch):
    """A FakeNdif serving the tiny GPT-2 (its own load: the client's model never runs the jobs)."""
    server = load(ModelRef(model=str(tiny_gpt2), backend="nnsight"))
    fake = FakeNdif(server.nnsight)
    monkeypatch.setenv("NDIF_API_KEY", "sekret-123")
    monkeypatch.setenv("NEUROTRACE_NDIF_URL", fake.url)
    previous = configure_remote(transport=fake, poll_seconds=0.0, repo_id=lambda _lm: HUB_ID)
    yield fake
    configure_remote(**previous)


def test_a_remote_request_without_a_key_is_refused_naming_the_setting(tiny_gpt2, monkeypatch, tmp_path):
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    with pytest.raises(InputError) as err:
        run_trace(_trace(str(tiny_gpt2), backend="nnsight", remote=True), lab=Lab(LabSettings(runs_dir=tmp_path)))
    assert err.value.field == "remote" and "NDIF_API_KEY" in str(err.value) and "server" in err.value.fix
    assert not list(tmp_path.iterdir())  # refused before any run was opened


def test_remote_needs_the_nnsight_backend_and_an_experiment_ndif_can_run(monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", "k")
    with pytest.raises(InputError) as err:
        check_execution(_trace("gpt2", remote=True))
    assert err.value.field == "backend"
    with pytest.raises(InputError) as err:
        check_execution(CaptureRequest(model="gpt2", prompts=["a"], backend="nnsight", remote=True))
    assert err.value.field == "remote"
    assert check_execution(_trace("gpt2")) is None
    assert check_execution(_trace("gpt2", backend="nnsight", remote=True)).api_key == "k"


def test_a_remote_trace_runs_as_ndif_jobs_with_the_local_numbers(tiny_gpt2, ndif, tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    local = run_trace(_trace(str(tiny_gpt2)), lab=lab)
    remote = run_trace(_trace(str(tiny_gpt2), backend="nnsight", remote=True), lab=lab)
    a, b = (json.loads((lab.store.run_dir(r.run_id) / "trace_results.json").read_text(encoding="utf-8"))
            ["models"][str(tiny_gpt2)]["facts"][0] for r in (local, remote))
    for k in ("resid", "mlp", "attn"):
        torch.testing.assert_close(torch.tensor(b["restored"][k]), torch.tensor(a["restored"][k]), rtol=1e-5, atol=0)
    assert b["p_clean"] == pytest.approx(a["p_clean"], rel=1e-6)
    jobs = json.loads((lab.store.run_dir(remote.run_id) / "remote_jobs.json").read_text(encoding="utf-8"))
    assert jobs["jobs"] == len(ndif.jobs) >= 3 and jobs["statuses"] == ["COMPLETED"]
    assert set(ndif.keys) == {"sekret-123"} and "sekret" not in json.dumps(jobs)
    assert all(json.loads(job.envelope["model_key"].split(":", 1)[1])["repo_id"] == HUB_ID
               for job in ndif.jobs.values())
    client = remote_model(ModelRef(model=str(tiny_gpt2), backend="nnsight"))
    assert {p.device.type for p in client.model.parameters()} == {"meta"}  # the client has no weights
    assert not [m for m in lab.cache.listing() if m.get("backend") == "nnsight"]


def test_a_remote_noise_trace_needs_a_numeric_noise_unit(tiny_gpt2, ndif, tmp_path):
    with pytest.raises(InputError) as err:
        run_trace(_trace(str(tiny_gpt2), backend="nnsight", remote=True).model_copy(
            update={"noise_std_from": "embeddings"}), lab=Lab(LabSettings(runs_dir=tmp_path)))
    assert err.value.field == "noise_std_from" and "number" in err.value.fix


def test_only_the_saved_values_come_back_from_ndif(tiny_gpt2, ndif, tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    run_trace(_trace(str(tiny_gpt2), backend="nnsight", remote=True, components=["resid"]), lab=lab)
    n_pos = 9
    for job in ndif.jobs.values():
        raw = job.result if not job.envelope["compress"] else zstandard.ZstdDecompressor().decompress(job.result)
        saved = torch.load(io.BytesIO(raw), weights_only=False)
        tensors = [t for v in saved.values() for t in (v.values() if isinstance(v, dict) else [v])]
        widths = [t.untyped_storage().nbytes() // t.element_size() for t in tensors]  # what was pickled
        assert all(w <= n_pos * 64 or w == t.numel() == t.shape[0] for w, t in zip(widths, tensors, strict=True))
        assert sum(widths) < 512 * 64  # p(target) per row or clean states, never a cache or vocabulary logits
        assert len(raw) < 4 * sum(widths) * 4 + 4096


def test_cancelling_a_remote_run_stops_the_wait_and_keeps_the_job_ids(tiny_gpt2, ndif, tmp_path):
    ndif.hold = True
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    messages: list[str] = []
    reporter = Reporter()

    def on_progress(done, total, message):
        messages.append(message)
        if "RUNNING" in message:
            reporter.cancel()

    reporter.on_progress = on_progress
    with pytest.raises(Cancelled):
        run_trace(_trace(str(tiny_gpt2), backend="nnsight", remote=True), lab=lab, reporter=reporter)
    assert any(m.startswith("NDIF job job-1") and "QUEUED" in m for m in messages)
    run_id = lab.store.list_runs("trace")[0].run_id
    jobs = json.loads((lab.store.run_dir(run_id) / "remote_jobs.json").read_text(encoding="utf-8"))
    assert [r["job_id"] for r in jobs["records"]] == ["job-1"] and jobs["records"][0]["status"] == "RUNNING"


@pytest.mark.skipif(not (os.environ.get("NDIF_API_KEY") and os.environ.get("NEUROTRACE_WEIGHTS_DIR")),
                    reason="needs NDIF_API_KEY and NEUROTRACE_WEIGHTS_DIR/gpt2 (opt-in, runs jobs on NDIF)")
def test_a_remote_trace_on_ndif_gives_the_local_numbers(tmp_path):
    path = os.path.join(os.environ["NEUROTRACE_WEIGHTS_DIR"], "gpt2")
    if not os.path.isfile(os.path.join(path, "config.json")):
        pytest.skip(f"no gpt2 checkpoint under {os.environ['NEUROTRACE_WEIGHTS_DIR']}")
    fact = {"id": "needle", "template": "{} is located in the city of", "clean_subject": "The Space Needle",
            "target": "Seattle"}
    request = TraceRequest(trace_unknown=True, models=[path], facts=[fact], components=["mlp"], noise_std_from=0.1,
                           corruption={"kind": "noise", "samples": 2})
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    previous = configure_remote(repo_id=lambda _lm: HUB_ID, poll_seconds=1.0)  # the real HTTP transport
    try:
        local = run_trace(request, lab=lab)
        remote = run_trace(request.model_copy(update={"backend": "nnsight", "remote": True}), lab=lab)
    finally:
        configure_remote(**previous)
    a, b = (json.loads((lab.store.run_dir(r.run_id) / "trace_results.json").read_text(encoding="utf-8"))
            ["models"][path]["facts"][0]["restored"]["mlp"] for r in (local, remote))
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-3, atol=1e-6)  # other GPUs, other sums


def test_the_http_transport_posts_nnsights_form_and_polls_the_job(tiny_gpt2):
    import httpx

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/request":
            return httpx.Response(200, json={"id": "j1", "status": "RECEIVED"})
        if request.url.path == "/response/j1":
            return httpx.Response(200, json={"id": "j1", "status": "RUNNING"})
        return httpx.Response(404)

    class Mocked(HttpTransport):
        def _client(self):
            return httpx.Client(transport=httpx.MockTransport(handler))

    lm = load(ModelRef(model=str(tiny_gpt2), backend="nnsight"))
    envelope, payload = build_remote_request(lm, torch.tensor([[1, 2, 3]]), 2, 5, repo_id=HUB_ID)
    transport = Mocked()
    first = json.loads(transport.post("https://ndif.test", "sekret", envelope, payload))
    assert first["id"] == "j1"
    post = seen[0]
    assert post.method == "POST" and post.headers["ndif-api-key"] == "sekret" and post.headers["nnsight-version"]
    assert envelope.encode() in post.content and payload in post.content     # the form nnsight's client sends
    assert json.loads(transport.get("https://ndif.test", "sekret", "j1"))["status"] == "RUNNING"
    assert transport.get("https://ndif.test", "sekret", "nope") is None      # no status recorded yet
