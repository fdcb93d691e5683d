"""Issue 23 items 9 and 11: error texts never show the home directory and never echo a huge value back."""

import os

import anyio
import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server
from neurotrace.tools._faults import scrub

pytestmark = pytest.mark.anyio


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


async def test_load_model_of_the_home_directory_does_not_show_it(lab):
    home = os.path.realpath(os.path.expanduser("~"))
    async with Client(build_server(lab=lab)) as client:
        with anyio.fail_after(60):
            result = await client.call_tool("load_model", {"request": {"model": "~"}})
    text = result.content[0].text
    assert result.is_error and "model:" in text and "Fix:" in text
    assert home not in text and "'~'" in text, text


@pytest.mark.parametrize(("tool", "args"), [("release_model", {"model": "x" * 1_000_000}),
                                            ("run_status", {"run_id": "y" * 1_000_000})])
async def test_a_megabyte_argument_is_not_echoed_whole(lab, tool, args):
    async with Client(build_server(lab=lab)) as client:
        with anyio.fail_after(60):
            result = await client.call_tool(tool, args)
    text = result.content[0].text
    assert result.is_error and len(text) < 1000 and "characters)" in text and "Fix:" in text, text[:300]


def test_scrub_keeps_short_values_and_paths_below_home_readable():
    home = os.path.realpath(os.path.expanduser("~"))
    assert scrub(f"model: no model at '{home}/models/x'. Fix: check") == "model: no model at '~/models/x'. Fix: check"
    assert scrub(f"a {home}x b") == f"a {home}x b"  # only the directory itself, not a longer name
    assert scrub("field: 'short'") == "field: 'short'"


async def test_a_16_mib_one_column_csv_and_a_pickle_only_model_get_messages(tmp_path):
    """Issue 23 item 8: both used to end in an error with no message."""
    import json

    import torch

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "big.csv").write_text("prompt\n" + "x" * (16 * 2**20 - 10) + "\n", encoding="utf-8")
    model = inputs / "pickled"
    model.mkdir()
    torch.save({"transformer.wte.weight": torch.zeros(10, 8)}, model / "pytorch_model.bin")
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_embd": 8, "n_head": 2,
                                                   "vocab_size": 10, "n_positions": 16}), encoding="utf-8")
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs", input_dirs=(inputs,)))
    async with Client(build_server(lab=lab)) as client:
        with anyio.fail_after(120):
            csv_reply = await client.call_tool("clamp_sweep", {"request": {
                "model": "fact-gpt2", "neurons": ["1:3"], "prompt_file": "big.csv", "values": [0]}})
            pickle_reply = await client.call_tool("load_model", {"request": {"model": str(model)}})
    text = csv_reply.content[0].text
    assert csv_reply.is_error and "prompt_file" in text and "big.csv row 2" in text and "Fix:" in text, text
    text = pickle_reply.content[0].text
    assert pickle_reply.is_error and "pytorch_model.bin" in text and "safetensors" in text and "Fix:" in text, text
