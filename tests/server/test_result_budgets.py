"""Agent-sized results (issue 13 item 6): for a representative request per tool, the reply's text is at
most 2K characters, its structured content at most 8K, and at most one image is inlined (the other
figures are resource links)."""

import json

import anyio
import mcp_types as types
import pytest
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server
from neurotrace.tools._runner import MAX_STRUCTURED_CHARS, MAX_TEXT_CHARS, package

pytestmark = pytest.mark.anyio
PROMPT = "The capital of France is"
REQUESTS = [
    ("logit_lens", {"model": "fact-gpt2", "prompt": PROMPT, "target": "Paris"}),
    ("attention", {"model": "fact-gpt2", "prompt": PROMPT, "heads": ["4:2", "5:*"], "subject": "France"}),
    ("attribute", {"model": "fact-gpt2", "prompt": PROMPT, "target": "Paris"}),
    ("clamp_sweep", {"model": "fact-gpt2", "neurons": ["5:12"], "prompts": ["the the the"], "max_new_tokens": 8,
                     "values": [None, 0.0, 5.0], "controls": 1}),
    ("capture", {"model": "fact-gpt2", "sites": ["blocks.3.hook_resid_post"], "prompts": [PROMPT]}),
    ("tokenize", {"texts": [" ".join([PROMPT] * 200)] * 64, "models": ["fact-gpt2", "fact-bert"]}),
]


def check_budgets(name: str, result: types.CallToolResult) -> None:
    assert not result.is_error, (name, result.content)
    text = sum(len(c.text) for c in result.content if isinstance(c, types.TextContent))
    images = sum(isinstance(c, types.ImageContent) for c in result.content)
    structured = len(json.dumps(result.structured_content))
    assert text <= MAX_TEXT_CHARS, f"{name}: text {text} > {MAX_TEXT_CHARS}"
    assert images <= 1, f"{name}: {images} inline images"
    assert structured <= MAX_STRUCTURED_CHARS, f"{name}: structured content {structured} > {MAX_STRUCTURED_CHARS}"
    figures = result.structured_content.get("figures") or []
    links = {str(c.uri) for c in result.content if isinstance(c, types.ResourceLink)}
    assert all(str(f) in links for f in figures[1:]), f"{name}: figures beyond the first are not linked"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("budgets") / "runs"))


@pytest.mark.parametrize("name,request_", REQUESTS, ids=[n for n, _ in REQUESTS])
async def test_a_representative_reply_fits_the_agent_budgets(lab, name, request_):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        with anyio.fail_after(300):
            result = await client.call_tool(name, {"request": request_})
    check_budgets(name, result)


async def test_facts_trace_and_plot_replies_fit_the_agent_budgets(lab):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        with anyio.fail_after(600):
            facts = await client.call_tool("generate_facts", {"request": {
                "source": {"kind": "pack", "domains": ["geography"]}, "models": ["fact-gpt2"]}})
            check_budgets("generate_facts", facts)
            dataset = facts.structured_content["run_id"]
            trace = await client.call_tool("trace", {"request": {"models": ["fact-gpt2"], "dataset_run_id": dataset,
                                                                 "max_facts": 2}})
            check_budgets("trace", trace)
            plot = await client.call_tool("plot", {"request": {"run_id": trace.structured_content["run_id"]}})
            check_budgets("plot", plot)


async def test_long_summaries_are_cut_with_a_pointer_and_extra_figures_become_links(lab):
    with lab.store.open_run("demo", {}) as run:
        figures = [run.write_bytes(f"figures/f{i}.png", b"\x89PNG\r\n\x1a\nfake") for i in range(3)]
        run_id = run.run_id
    result = package({"run_id": run_id, "summary": "x" * 5000, "figures": figures, "artifacts": figures,
                      "next": "Call plot."}, lab)
    text = result.content[0].text
    assert len(text) <= MAX_TEXT_CHARS and f"neurotrace://runs/{run_id}/manifest" in text and "Next:" in text
    assert sum(isinstance(c, types.ImageContent) for c in result.content) == 1
    assert sorted(str(c.uri) for c in result.content if isinstance(c, types.ResourceLink)) == sorted(figures[1:])
