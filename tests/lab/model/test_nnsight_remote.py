"""Remote execution through NDIF: the request nnsight would send is built and checked locally;
one opt-in test sends it when NDIF_API_KEY is set."""

import json
import os

import pytest
import torch
import zstandard

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.loading import ModelRef, load
from neurotrace.lab.model.nnsight_backend import (
    DEFAULT_NDIF_URL,
    build_remote_request,
    model_key,
    ndif_config,
    remote_backend,
    traced_probs,
)

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
