"""Budgets and placement through the real in-memory client: list_models shows where each model's layers
live and its bytes per device; an oversize job is refused with the error the Python API raises."""

import mcp_types as types
import pytest
from mcp import Client

from neurotrace import TraceRequest
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.cache import ModelCache
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.server import build_server
from neurotrace.testing.errors import raises_lab_error

pytestmark = pytest.mark.anyio
FACT = {"template": "The capital of {} is", "clean_subject": "France", "target": "Paris", "corrupt_subject": "Japan"}


def _text(result) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_list_models_reports_layers_and_bytes_per_device_for_plain_and_offloaded_loads(tmp_path, tiny_gpt2,
                                                                                              monkeypatch):
    monkeypatch.setenv("NEUROTRACE_MODELS_DIR", str(tmp_path / "models"))
    whole = ModelCache().get(ModelRef(model=str(tiny_gpt2))).nbytes
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs", memory_budget_bytes=whole * 2 // 3))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        plain = await client.call_tool("load_model", {"request": {"model": str(tiny_gpt2)}})
        assert plain.is_error and "on cpu, more than its whole memory budget" in _text(plain)
        assert "device='auto'" in _text(plain)                     # the fix: spread it over memory and disk
        placed = await client.call_tool("load_model", {"request": {"model": str(tiny_gpt2), "device": "auto"}})
        assert not placed.is_error and "Layers: " in _text(placed) and "disk 0-1" in _text(placed), _text(placed)
        listed = (await client.call_tool("list_models", {})).structured_content
    rows = {row["key"].rsplit("|", 1)[-1]: row for row in listed["loaded"]}
    assert set(rows) == {"auto"}
    auto = rows["auto"]
    assert auto["layers"] == {"disk": "0-1"}          # the embeddings fill the host budget; blocks on disk
    assert auto["device_bytes"]["cpu"] <= lab.cache.budget_bytes < auto["device_bytes"]["cpu"] + \
        auto["device_bytes"]["disk"]
    assert listed["used_by_device"] == auto["device_bytes"] and listed["budgets"]["cpu"] == whole * 2 // 3
    assert "device_map" not in auto                  # the full module map stays in load_model's reply


async def test_an_oversize_trace_is_refused_over_mcp_with_the_python_api_error_and_no_run(tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs", memory_budget_bytes=2**20))
    request = {"models": ["fact-gpt2"], "facts": [FACT]}
    with raises_lab_error(InputError) as err:
        lab.check(TraceRequest.model_validate(request))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        for extra in ({}, {"wait": False}):
            refused = await client.call_tool("trace", {"request": request, **extra})
            assert refused.is_error and str(err.value) in _text(refused), _text(refused)
    assert not any(lab.store.root.iterdir())
