"""capture (corpus) -> fit_sae -> features through the real in-memory MCP client, chained by run ids."""

import json
import random

import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server
from neurotrace.testing.tiny import WORDS

pytestmark = pytest.mark.anyio
SITE = "blocks.1.hook_resid_post"


async def test_a_corpus_capture_feeds_fit_sae_and_features_pages_over_mcp(tmp_path, tiny_gpt2):
    (tmp_path / "inputs").mkdir()
    rnd = random.Random(1)
    (tmp_path / "inputs" / "words.txt").write_text(
        "\n\n".join(" ".join(rnd.choice(WORDS) for _ in range(20)) for _ in range(200)), encoding="utf-8")
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        cap = await client.call_tool("capture", {"request": {"model": str(tiny_gpt2), "sites": [SITE],
                                                             "corpus": "words.txt", "context_size": 32,
                                                             "max_tokens": 32 * 60, "store_dtype": "float16"}})
        assert not cap.is_error and "corpus words.txt" in cap.structured_content["summary"]
        capture_id = cap.structured_content["run_id"]
        fit = await client.call_tool("fit_sae", {"request": {"capture_run_id": capture_id, "d_sae": 32, "k": 4,
                                                             "n_steps": 60, "batch_size": 64, "splice_steps": 0}})
        assert not fit.is_error
        sae_id = fit.structured_content["run_id"]
        res = await client.call_tool("features", {"request": {"dictionary": sae_id, "capture_run_id": capture_id,
                                                              "page_size": 5, "prompt": "the moon is red",
                                                              "search": "moon"}})
        bad = await client.call_tool("features", {"request": {"dictionary": sae_id, "capture_run_id": capture_id,
                                                              "features": [999]}})
    assert not res.is_error
    r = res.structured_content
    assert r["d_sae"] == 32 and len(r["listing"]) == 5 and r["next_cursor"] == 5
    assert r["pages"] and r["pages"][0]["top"][0]["text"].count("[[") == 1
    assert r["prompt_features"] and r["n_matches"] > 0
    assert r["capture_run_id"] in r["next"] and "cursor=5" in r["next"]
    page = json.loads(lab.store.artifact_path(r["run_id"], f"features/{r['pages'][0]['index']}.json").read_text())
    assert page["pos_str"] and page["activations"]
    assert set(lab.store.manifest(r["run_id"]).inputs) == {capture_id, sae_id}
    assert len(json.dumps(r)) <= 8000
    assert bad.is_error and "features:" in bad.content[0].text
