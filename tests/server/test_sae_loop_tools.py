"""capture -> fit_sae -> intervene through the real in-memory MCP client, chained by run ids."""

import json

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

pytestmark = pytest.mark.anyio
PROMPTS = ["the cat is big and red", "a dog lives in the old house", "the king of france speaks french",
           {"text": "the capital of france is", "target": "paris"}]


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


async def test_the_three_tools_chain_by_run_id(lab, tiny_gpt2):
    seen = []

    async def on_progress(progress, total, message):
        seen.append(progress)

    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        cap = await client.call_tool("capture", {"request": {
            "model": str(tiny_gpt2), "sites": ["blocks.1.hook_resid_pre"], "prompts": PROMPTS,
            "interventions": [{"kind": "zero_heads", "layer": 0, "heads": [0], "steps": [0]}]}},
            progress_callback=on_progress)
        assert not cap.is_error and seen
        c = cap.structured_content
        assert c["sites"] == ["blocks.1.hook_resid_pre"] and c["n_steps"] == 4 and c["trace"].endswith("trace.jsonl")
        assert c["run_id"] in c["next"]

        fit = await client.call_tool("fit_sae", {"request": {"capture_run_id": c["run_id"], "n_steps": 40, "k": 4,
                                                             "batch_size": 16}})
        assert not fit.is_error
        f = fit.structured_content
        assert f["d_sae"] == 128 and f["metrics"]["l0"] <= 4 and f["metrics"]["ce_loss_with_sae"] is not None
        assert f["verdict"] in ("usable", "marginal", "unusable") and f["verdict"] in f["summary"]
        assert {b.type for b in fit.content} >= {"text", "image", "resource_link"}
        assert f["sae"].endswith("/sae.safetensors") and f["examples"].endswith("top_examples.csv")

        request = {"fit_sae_run_id": f["run_id"], "prompts": [{"prompt": "the capital of france is", "target": "paris"}],
                   "max_new_tokens": 3, "rank_features": 4,
                   "policies": [{"kind": "ablate_features", "features": [0, 1, 2]}]}
        first = await client.call_tool("intervene", {"request": request})
        again = await client.call_tool("intervene", {"request": request})
    assert not first.is_error and not again.is_error
    i = first.structured_content
    assert i["n_prompts"] == 1 and i["report"].endswith("/report.json") and "verdict" in i
    reports = [lab.store.artifact_path(r.structured_content["run_id"], "report.json").read_bytes()
               for r in (first, again)]
    assert reports[0] == reports[1]
    report = json.loads(reports[0])
    assert report["inputs"] == [f["run_id"], c["run_id"]]
    assert lab.store.manifest(f["run_id"]).inputs == [c["run_id"]]
    assert lab.store.manifest(i["run_id"]).inputs == [f["run_id"]]


async def test_tool_errors_name_the_field(lab, tiny_gpt2):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        bad = await client.call_tool("capture", {"request": {"model": str(tiny_gpt2), "sites": ["blocks.9.*"],
                                                             "prompts": ["the cat"]}})
        assert bad.is_error and "sites: pattern 'blocks.9.*'" in bad.content[0].text
        cap = await client.call_tool("capture", {"request": {"model": str(tiny_gpt2), "prompts": ["the cat"]}})
        run_id = cap.structured_content["run_id"]
        fit = await client.call_tool("fit_sae", {"request": {"capture_run_id": run_id, "n_steps": 2}})
        assert fit.is_error and "site: run" in fit.content[0].text
        inter = await client.call_tool("intervene", {"request": {"fit_sae_run_id": run_id, "prompts": ["the cat"],
                                                                 "policies": [{"kind": "ablate_features",
                                                                               "features": [0]}]}})
        assert inter.is_error and "fit_sae_run_id:" in inter.content[0].text
        empty = await client.call_tool("intervene", {"request": {"model": str(tiny_gpt2), "prompts": ["the cat"],
                                                                 "policies": [], "max_new_tokens": 1}})
        assert not empty.is_error and "Ranking-only" in empty.content[0].text
        far = await client.call_tool("intervene", {"request": {"model": str(tiny_gpt2), "prompts": ["the cat"],
                                                               "policies": [{"kind": "zero", "site":
                                                                             "blocks.0.hook_mlp_out",
                                                                             "positions": [30]}]}})
        assert far.is_error and "policies:" in far.content[0].text
