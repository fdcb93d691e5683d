"""MCP face of explain (core: :mod:`neurotrace.lab.explain`).

With a client that offers sampling, one call does it all through resolvers, in order: the evidence and the quiz
(:func:`prepared`, lab work in a thread), the explanation (the client's LLM, unless the request gives one), then the
two blind judgements (detection, fuzzing). Each LLM request is a ``Sample`` resolver, so it works on every protocol
revision (a mid-call ``sampling/createMessage`` before 2026-07-28, an input-required round trip after). Without
sampling, or with ``judge: manual``, the call returns the evidence and the quiz, and a second call scores the
answers.
"""

from functools import partial
from typing import Annotated

import mcp_types as types
from mcp.server.mcpserver import Context, Resolve, Sample
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult

from neurotrace.lab.explain import (
    EXPLAINER_SYSTEM,
    JUDGE_SYSTEM,
    AnswerSheet,
    ExplainRequest,
    ExplainResult,
    Prepared,
    detection_prompt,
    explainer_prompt,
    fuzzing_prompt,
    parse_explanation,
    parse_ids,
    prepare_explain,
    run_explain,
)
from neurotrace.tools._faults import tool_faults
from neurotrace.tools._runner import lab_of, run_in_lab

Reply = types.CreateMessageResult | None


def _sampling(request: ExplainRequest, ctx: Context) -> bool:
    if request.quiz_run_id or request.judge == "manual":
        return False
    caps = ctx.client_capabilities
    offered = caps is not None and caps.sampling is not None
    if request.judge == "sampling" and not offered:
        raise ToolError("judge: this MCP client does not offer sampling, so its LLM cannot explain or judge. Fix: "
                        "use judge='manual' (two calls: this call returns evidence and a quiz; send quiz_run_id, "
                        "explanation and answers back)")
    return offered


def prepared(request: ExplainRequest, ctx: Context) -> Prepared | None:
    """Evidence and quiz, built before any LLM request (memoised: later protocol rounds reuse it)."""
    if not _sampling(request, ctx):
        return None
    with tool_faults():
        return prepare_explain(request, lab=lab_of(ctx))


def _ask(text: str, system: str, max_tokens: int) -> Sample:
    message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=text))
    return Sample([message], max_tokens=max_tokens, system_prompt=system, temperature=0.0)


def text_of(reply: Reply) -> str:
    if reply is None:
        return ""
    content = reply.content if isinstance(reply.content, list) else [reply.content]
    return "\n".join(c.text for c in content if isinstance(c, types.TextContent))


def explainer(request: ExplainRequest, prep: Annotated[Prepared | None, Resolve(prepared)]) -> Sample | None:
    if prep is None or request.explanation:
        return None
    return _ask(explainer_prompt(prep.evidence), EXPLAINER_SYSTEM, 200)


def _explanation(request: ExplainRequest, reply: Reply) -> str:
    return request.explanation or parse_explanation(text_of(reply))


def detection_judge(request: ExplainRequest, prep: Annotated[Prepared | None, Resolve(prepared)],
                    written: Annotated[Reply, Resolve(explainer)]) -> Sample | None:
    if prep is None:
        return None
    return _ask(detection_prompt(_explanation(request, written), prep.quiz.detection), JUDGE_SYSTEM, 200)


def fuzzing_judge(request: ExplainRequest, prep: Annotated[Prepared | None, Resolve(prepared)],
                  written: Annotated[Reply, Resolve(explainer)]) -> Sample | None:
    if prep is None:
        return None
    return _ask(fuzzing_prompt(_explanation(request, written), prep.quiz.fuzzing), JUDGE_SYSTEM, 200)


async def explain(
    request: ExplainRequest, ctx: Context,
    prep: Annotated[Prepared | None, Resolve(prepared)] = None,
    written: Annotated[Reply, Resolve(explainer)] = None,
    detected: Annotated[Reply, Resolve(detection_judge)] = None,
    fuzzed: Annotated[Reply, Resolve(fuzzing_judge)] = None,
) -> Annotated[CallToolResult, ExplainResult]:
    """What does this neuron or dictionary feature do? Names it from corpus evidence and scores the name blind.

    With sampling your LLM explains, then judges held-out excerpts (detection, fuzzing): balanced accuracy,
    95% interval, null, verdict. Else (judge='manual') call twice: quiz, then quiz_run_id+explanation+answers.
    """
    if prep is None:
        return await run_in_lab(ctx, run_explain, request)
    explanation = _explanation(request, written)
    if not explanation:
        raise ToolError("explanation: the client's LLM gave no explanation. Fix: pass explanation='...' yourself, "
                        "or use judge='manual'")
    answers = AnswerSheet(detection=[i for i in parse_ids(text_of(detected)) if i in prep.key.detection_ids],
                          fuzzing=[i for i in parse_ids(text_of(fuzzed)) if i in prep.key.fuzzing_ids])
    transcript = [{"role": role, "prompt": prompt, "reply": text_of(reply)} for role, prompt, reply in (
        ("explainer", explainer_prompt(prep.evidence) if not request.explanation else "", written),
        ("detection judge", detection_prompt(explanation, prep.quiz.detection), detected),
        ("fuzzing judge", fuzzing_prompt(explanation, prep.quiz.fuzzing), fuzzed)) if reply is not None]
    fn = partial(run_explain, prepared=prep, explanation=explanation, answers=answers, transcript=transcript)
    return await run_in_lab(ctx, fn, request)

