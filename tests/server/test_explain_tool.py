"""explain through the real in-memory MCP client: the client's LLM (a deterministic rule) explains and judges
blind, on both protocol revisions; the two-call form scores the same answers the same; refusals are typed."""

import mcp_types as types
import pytest
from mcp import Client

from neurotrace.server import build_server
from neurotrace.testing.explain_world import MODEL, build_world, rule_reply


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("explain-tool"))


def rule_llm(seen: list):
    async def callback(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        prompt = params.messages[0].content.text
        seen.append(prompt)
        return types.CreateMessageResult(role="assistant", model="rule",
                                         content=types.TextContent(type="text", text=rule_reply(prompt)))
    return callback


def refusing(context, params):
    async def _():
        return types.ErrorData(code=-1, message="User rejected sampling request")
    return _()


def request(corpus: str, folder: str, feature: int = 0, **kw) -> dict:
    return {"request": {"model": MODEL, "feature": feature, "dictionary": folder, "corpus": corpus,
                        "context_size": 32, "max_tokens": 4096, **kw}}


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_clients_llm_names_and_judges_blind(world, mode):
    lab, corpus, folder = world
    seen: list[str] = []
    async with Client(build_server(lab=lab), raise_exceptions=True, sampling_callback=rule_llm(seen),
                      mode=mode) as client:
        result = await client.call_tool("explain", request(corpus, folder))
    assert not result.is_error, result.content
    out = result.structured_content
    assert len(seen) == 3 and "Say in one short sentence" in seen[0]
    assert "numbers" in out["explanation"]
    assert out["scores"]["verdict"] == "predictive" and out["scores"]["detection"]["balanced_accuracy"] >= 0.9
    for judge_prompt in seen[1:]:        # judges see neither activations nor the evidence
        assert "activation" not in judge_prompt and "Excerpt" not in judge_prompt
    assert any("llm_transcript.json" in uri for uri in out["artifacts"])


@pytest.mark.anyio
async def test_two_calls_score_the_same_answers_the_same(world):
    lab, corpus, folder = world
    seen: list[str] = []
    async with Client(build_server(lab=lab), raise_exceptions=True, sampling_callback=rule_llm(seen)) as client:
        sampled = (await client.call_tool("explain", request(corpus, folder, seed=5))).structured_content
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:   # no sampling: two calls
        first = (await client.call_tool("explain", request(corpus, folder, seed=5))).structured_content
        assert first["scores"] is None and first["quiz"]["detection"]
        from neurotrace.lab.explain.prompts import detection_prompt, fuzzing_prompt, parse_ids
        from neurotrace.lab.explain.schema import QuizItem

        det = [QuizItem(**q) for q in first["quiz"]["detection"]]
        fuzz = [QuizItem(**q) for q in first["quiz"]["fuzzing"]]
        explanation = sampled["explanation"]
        answers = {"detection": parse_ids(rule_reply(detection_prompt(explanation, det))),
                   "fuzzing": parse_ids(rule_reply(fuzzing_prompt(explanation, fuzz)))}
        second = await client.call_tool("explain", {"request": {"quiz_run_id": first["run_id"],
                                                                "explanation": explanation, "answers": answers}})
    assert not second.is_error, second.content
    assert second.structured_content["scores"] == sampled["scores"]


@pytest.mark.anyio
async def test_without_or_refused_sampling_the_error_names_the_two_call_form(world):
    lab, corpus, folder = world
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("explain", request(corpus, folder, judge="sampling"))
    assert result.is_error and "judge='manual'" in result.content[0].text
    # a mid-call sampling request the client refuses (before 2026-07-28; later revisions refuse client-side)
    async with Client(build_server(lab=lab), raise_exceptions=True, sampling_callback=refusing,
                      mode="legacy") as client:
        result = await client.call_tool("explain", request(corpus, folder, seed=9))
    assert result.is_error and "judge='manual'" in result.content[0].text, result.content[0].text
