"""Remote execution on NDIF: configuration, the request nnsight sends, and non-blocking jobs mapped onto
neurotrace's run lifecycle.

* **Configuration** is the server's, never a request's: ``NEUROTRACE_NDIF_URL`` names the endpoint
  (default ``https://api.ndif.us``) and ``NDIF_API_KEY`` holds the key (:func:`ndif_config`); a request
  only says ``remote: true`` (:func:`check_execution` refuses it, naming the fix, when no key is set).
* **What crosses the network**: nnsight serialises the traced block (its source and the values it
  references: token ids, noise rows, the clean states a restoration writes) and names the model by
  its hub id (:func:`model_key`); the weights never travel. Each trace saves only what the experiment
  reads (p(target) per row, the clean states at the restored sites), so that is all that comes back.
  :func:`build_remote_request` builds the exact envelope and payload without sending them.
* **Jobs**: every trace of a remote run is one non-blocking NDIF job (:class:`JobBackend`): submitted
  over HTTP without a websocket, then polled; each poll is a ``reporter.step`` (the run's progress
  says ``NDIF job <id>: RUNNING``), so a cancel stops the wait at the next poll, and ``run_status``
  after a client reconnects shows the same progress as any long run. The jobs (ids, statuses, bytes
  sent and fetched, seconds) are kept by :class:`RemoteSession` and written to the run.
* **Transport** is injectable (:class:`Transport`): :class:`HttpTransport` speaks NDIF's HTTP API
  (``POST /request``, ``GET /response/{id}``); tests pass one that runs the job locally.
"""

import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.adapters import adapter_for
from neurotrace.lab.model.runtime.nnsight_backend import HookMap, require, traced_probs, use_backend
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.loading import (
    DTYPES,
    LoadedModel,
    ModelRef,
    cache_key,
    detect_kind,
    fingerprint,
    read_config,
    resolve_source,
)
from neurotrace.lab.progress import NULL_REPORTER, Reporter

NDIF_URL_ENV = "NEUROTRACE_NDIF_URL"
NDIF_KEY_ENV = "NDIF_API_KEY"
DEFAULT_NDIF_URL = "https://api.ndif.us"
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class NdifConfig:
    """Where NDIF is and the key to use: server configuration only, read from the environment."""

    url: str
    api_key: str | None

    def __repr__(self) -> str:  # never print the key
        return f"NdifConfig(url={self.url!r}, api_key={'set' if self.api_key else 'unset'})"


def ndif_config(environ: Mapping[str, str] | None = None) -> NdifConfig:
    env = os.environ if environ is None else environ
    url = env.get(NDIF_URL_ENV) or DEFAULT_NDIF_URL
    if not url.startswith(("http://", "https://")):
        raise InputError("remote", f"{NDIF_URL_ENV} must start with http:// or https://",
                         fix=f"set {NDIF_URL_ENV} to the NDIF endpoint, e.g. {DEFAULT_NDIF_URL}")
    return NdifConfig(url=url, api_key=env.get(NDIF_KEY_ENV) or None)


def check_execution(request: Any, environ: Mapping[str, str] | None = None) -> NdifConfig | None:
    """The NDIF configuration a ``remote`` request runs on (None when local), or the InputError saying
    what to change: remote needs backend='nnsight', an experiment that runs on NDIF (its request type
    declares ``on_ndif = True``: every forward is a trace of saved values), and a key."""
    if not getattr(request, "remote", False):
        return None
    if request.backend != "nnsight":
        raise InputError("backend", "remote execution runs through nnsight", fix="set backend='nnsight'")
    if not getattr(type(request), "on_ndif", False):
        tool = getattr(type(request), "tool", "this experiment")
        raise InputError("remote", f"{tool} cannot run on NDIF yet (its generation loop keeps a KV cache and "
                         "reads states in Python between forwards)", fix="set remote=false (backend='nnsight' "
                         "runs locally with the same numbers), or trace remotely")
    config = ndif_config(environ)
    if not config.api_key:
        raise InputError("remote", f"remote execution needs an NDIF API key in {NDIF_KEY_ENV}, and none is set",
                         fix=f"set {NDIF_KEY_ENV} in the neurotrace server's environment (never in a request; "
                             "get a key at https://login.ndif.us) and restart the server")
    return config


def model_key(lm: Any, repo_id: str | None = None) -> str:
    """nnsight's key naming ``lm`` on NDIF: the hub id (``repo_id``; default the catalog's hub id for a
    catalog model, else the model's source) in nnsight's own format. NDIF hosts hub models only, so a
    local directory needs ``repo_id``; the id is taken as canonical (no hub call)."""
    from nnsight.modeling import huggingface

    wrapper = require(lm)
    named = catalog.CATALOG.get(lm.ref.model)
    repo = repo_id or (named.hub_id if named else lm.source)
    if repo.startswith((".", "/", "~")) or repo.count("/") != 1:
        raise InputError("remote", f"remote execution needs a HuggingFace hub id that NDIF hosts, not {repo!r}",
                         fix="name the model by its hub id, e.g. 'meta-llama/Llama-3.1-70B'")
    huggingface._ID_CACHE.setdefault(repo, repo)
    saved, wrapper.repo_id = wrapper.repo_id, repo
    try:
        return wrapper.to_model_key()
    finally:
        wrapper.repo_id = saved


def remote_backend(lm: Any, config: NdifConfig, *, blocking: bool = True, job_id: str | None = None,
                   repo_id: str | None = None) -> Any:
    """nnsight's own RemoteBackend for ``lm`` on ``config``'s server (``blocking=False``: submit, then poll)."""
    from nnsight.intervention.backends.remote import RemoteBackend

    if not config.api_key:
        raise InputError("remote", f"remote execution needs an NDIF API key in {NDIF_KEY_ENV}",
                         fix=f"set {NDIF_KEY_ENV} in the server's environment (never in a request)")
    return RemoteBackend(model_key(lm, repo_id), host=config.url, api_key=config.api_key, blocking=blocking,
                         job_id=job_id)


class _Capture:
    """An nnsight backend that serialises the request exactly as RemoteBackend would, and sends nothing."""

    def __init__(self, key: str) -> None:
        self.model_key = key
        self.envelope: str | None = None
        self.payload: bytes | None = None

    def __call__(self, tracer: Any) -> None:
        from nnsight.intervention.backends.remote import RemoteBackend
        from nnsight.schema.request import RequestModel

        remote = RemoteBackend(self.model_key, host=DEFAULT_NDIF_URL)
        self.envelope = RequestModel(model_key=self.model_key, compress=remote.compress).metadata()
        self.payload = remote._serialize(tracer)


def build_remote_request(lm: Any, ids: Tensor, predict_pos: int, target_id: int, hooks: HookMap | None = None,
                         *, repo_id: str | None = None) -> tuple[str, bytes]:
    """The (JSON envelope, payload bytes) that a remote :func:`traced_probs` would POST to NDIF."""
    capture = _Capture(model_key(lm, repo_id))
    try:
        traced_probs(lm, ids, predict_pos, target_id, hooks, backend=capture)
    except Exception:  # noqa: BLE001 - nothing ran, so the saved value is missing; the request is what we want
        if capture.payload is None:
            raise
    if capture.envelope is None or capture.payload is None:
        raise RuntimeError("nnsight did not hand the trace to its backend")
    return capture.envelope, capture.payload


# -- the client's model: a module tree without weights ---------------------------------------

_CLIENTS: dict[str, LoadedModel] = {}


def remote_model(ref: ModelRef, trust_remote_code: bool = False) -> LoadedModel:
    """``ref`` as a weights-free client for remote traces: config, tokenizer and the module tree on the
    meta device (all nnsight needs to build a request; every forward runs on NDIF). Built once."""
    key = cache_key(ref) + "|remote"
    if key not in _CLIENTS:
        from nnsight.modeling.transformers import TransformersModel
        from transformers import AutoTokenizer

        source = resolve_source(ref.model)
        config = read_config(source, trust_remote_code)
        kind = detect_kind(config, ref.lm_kind)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        with warnings.catch_warnings():  # BERT's 'output' child, as in nnsight_backend.wrap
            warnings.filterwarnings("ignore", message=".*which nnsight already serves.*", category=UserWarning)
            wrapper = TransformersModel(source, tokenizer=tokenizer, task="fill-mask" if kind == "masked"
                                        else "text-generation", dtype=DTYPES[ref.dtype],
                                        trust_remote_code=trust_remote_code)  # meta weights: never dispatched
        model = wrapper._module
        _CLIENTS[key] = LoadedModel(key=key, ref=ref, source=source, model=model, tokenizer=tokenizer,
                                    adapter=adapter_for(config), lm_kind=kind, fingerprint=fingerprint(model), nbytes=0,
                                    nnsight=wrapper, provenance={"weights": "NDIF (remote)"})
    return _CLIENTS[key]


@contextmanager
def remote_lease(ref: ModelRef, trust_remote_code: bool = False) -> Iterator[LoadedModel]:
    """Like the model cache's lease, for the weights-free client of a remote run (no memory to budget)."""
    lm = remote_model(ref, trust_remote_code)
    with lm.lock:
        yield lm


# -- non-blocking jobs ------------------------------------------------------------------------

class Transport(Protocol):
    """How requests reach NDIF: ``post`` returns the first status (ResponseModel JSON), ``get`` the latest
    (None while none is recorded), ``download`` a result staged at a URL."""

    def post(self, url: str, api_key: str, envelope: str, payload: bytes) -> str: ...

    def get(self, url: str, api_key: str, job_id: str) -> str | None: ...

    def download(self, url: str) -> bytes: ...


class HttpTransport:
    """NDIF's HTTP API with httpx (what nnsight's RemoteBackend does for non-blocking jobs)."""

    timeout = (10.0, 600.0)  # connect, read (seconds)

    def _client(self) -> Any:
        import httpx

        return httpx.Client(timeout=httpx.Timeout(self.timeout[0], read=self.timeout[1]))

    def post(self, url: str, api_key: str, envelope: str, payload: bytes) -> str:
        from nnsight.intervention.backends import remote  # the version headers the server may gate on

        headers = {"ndif-api-key": api_key, "ndif-timestamp": repr(time.time()),
                   "nnsight-version": remote._NNSIGHT_VERSION, "python-version": sys.version}
        with self._client() as client:
            response = client.post(f"{url}/request", data={"data": envelope},
                                   files={"blob": ("request", payload, "application/octet-stream")}, headers=headers)
        response.raise_for_status()
        return response.text

    def get(self, url: str, api_key: str, job_id: str) -> str | None:
        with self._client() as client:
            response = client.get(f"{url}/response/{job_id}", headers={"ndif-api-key": api_key})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.text

    def download(self, url: str) -> bytes:
        with self._client() as client:
            response = client.get(url)
        response.raise_for_status()
        return response.content


@dataclass
class JobRecord:
    """One NDIF job of a run (what remote_jobs.json lists)."""

    job_id: str
    label: str
    status: str = "RECEIVED"
    bytes_sent: int = 0
    bytes_fetched: int = 0
    seconds: float = 0.0
    description: str = ""


class RemoteSession:
    """The NDIF jobs of one run: where they go, how they travel, how the run waits for them."""

    def __init__(self, config: NdifConfig, transport: Transport, reporter: Reporter = NULL_REPORTER, *,
                 poll_seconds: float = POLL_SECONDS, repo_id: Callable[[Any], str | None] | None = None,
                 label: str = "trace") -> None:
        self.config, self.transport, self.reporter = config, transport, reporter
        self.poll_seconds, self.label = poll_seconds, label
        self.repo_id = repo_id or (lambda _lm: None)
        self.jobs: list[JobRecord] = []

    def backend_for(self, lm: Any) -> Any:
        return JobBackend(self, model_key(lm, self.repo_id(lm)))

    def summary(self) -> dict[str, Any]:
        return {"endpoint": self.config.url, "jobs": len(self.jobs),
                "bytes_sent": sum(j.bytes_sent for j in self.jobs),
                "bytes_fetched": sum(j.bytes_fetched for j in self.jobs),
                "seconds": round(sum(j.seconds for j in self.jobs), 3),
                "statuses": sorted({j.status for j in self.jobs})}


def _job_backend_class() -> type:
    from nnsight.intervention.backends.remote import RemoteBackend

    class _JobBackend(RemoteBackend):
        """nnsight's non-blocking RemoteBackend over a :class:`Transport`, waiting through the run's reporter."""

        def __init__(self, session: RemoteSession, key: str) -> None:
            super().__init__(key, host=session.config.url, api_key=session.config.api_key, blocking=False)
            self.session = session

        def _post(self, request: Any, blob: bytes) -> Any:
            from nnsight.schema.response import ResponseModel

            text = self.session.transport.post(self.host, self.api_key, request.metadata(), blob)
            return ResponseModel.model_validate_json(text)

        def __call__(self, tracer: Any = None) -> Any:
            session, start = self.session, time.monotonic()
            record = JobRecord(job_id="", label=session.label)
            blob = self._serialize(tracer)
            from nnsight.schema.request import RequestModel

            first = self._post(RequestModel(model_key=self.model_key, compress=self.compress, env=self.env), blob)
            record.job_id, record.status, record.bytes_sent = first.id, first.status.value, len(blob)
            self.job_id = first.id
            session.jobs.append(record)
            result = self._wait(record, first)
            record.seconds = time.monotonic() - start
            self._push(result, tracer)
            return result

        def _wait(self, record: JobRecord, response: Any) -> dict:
            from nnsight.schema.response import ResponseModel, Status

            session = self.session
            while True:
                record.status, record.description = response.status.value, response.description[:200]
                if response.status == Status.ERROR:
                    raise InputError("remote", f"NDIF job {record.job_id} failed: {record.description}",
                                     fix="check that NDIF hosts the model and the job fits its limits")
                if response.status == Status.COMPLETED:
                    return self._fetch(record, response.data)
                session.reporter.step(0, None, f"NDIF job {record.job_id} ({session.label}): {record.status}")
                time.sleep(session.poll_seconds)
                text = session.transport.get(self.host, self.api_key, record.job_id)
                if text is not None:
                    response = ResponseModel.model_validate_json(text)

        def _fetch(self, record: JobRecord, data: Any) -> dict:
            blob = bytes(data) if isinstance(data, bytes | bytearray) else self.session.transport.download(str(data))
            record.bytes_fetched = len(blob)
            return self.finalize(blob)

    return _JobBackend


def JobBackend(session: RemoteSession, key: str) -> Any:  # noqa: N802 - a class made on first use (nnsight is optional)
    """An nnsight backend running one trace as a non-blocking NDIF job of ``session``."""
    return _job_backend_class()(session, key)


@contextmanager
def remote_session(config: NdifConfig, reporter: Reporter = NULL_REPORTER, *, transport: Transport | None = None,
                   label: str = "trace") -> Iterator[RemoteSession]:
    """Inside the block every nnsight trace runs as an NDIF job of the yielded session."""
    session = RemoteSession(config, transport or _CONFIGURED.get("transport") or HttpTransport(), reporter,
                            poll_seconds=_CONFIGURED.get("poll_seconds", POLL_SECONDS),
                            repo_id=_CONFIGURED.get("repo_id"), label=label)
    with use_backend(session.backend_for):
        yield session


# The server's transport and polling (tests inject a local transport with configure_remote).
_CONFIGURED: dict[str, Any] = {}


def configure_remote(**settings: Any) -> dict[str, Any]:
    """Set the process's transport / poll_seconds / repo_id (for tests and embedding servers); returns the
    previous settings, to restore with ``configure_remote(**previous)`` after clearing."""
    previous = dict(_CONFIGURED)
    _CONFIGURED.clear()
    _CONFIGURED.update({k: v for k, v in settings.items() if v is not None})
    return previous


def jobs_json(session: RemoteSession) -> str:
    return json.dumps({**session.summary(), "records": [vars(j) for j in session.jobs]}, indent=1)
