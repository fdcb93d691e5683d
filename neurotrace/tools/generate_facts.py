"""MCP face of generate_facts (core: :mod:`neurotrace.lab.facts.generate`).

For ``source.kind == 'sampling'`` the client's own LLM drafts the facts. The drafting request is a
``Sample`` resolver, so it works on every protocol revision: older sessions get a
``sampling/createMessage`` request mid-call, 2026-07-28 sessions an input-required round trip. The
reply text is handed to the lab as ``draft_fn``; the lab parses, validates and drops bad drafts.
"""

from functools import partial
from typing import Annotated

import mcp_types as types
from mcp.server.mcpserver import Context, Resolve, Sample
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult

from neurotrace.lab.facts.generate import (
    GenerateFactsRequest,
    GenerateFactsResult,
    SamplingSource,
    run_generate_facts,
)
from neurotrace.lab.facts.packs import list_packs
from neurotrace.lab.facts.sources import drafting_prompt
from neurotrace.tools._runner import run_in_lab

SYSTEM_PROMPT = "You write short, unambiguous factual statements as strict JSON for interpretability experiments."


def no_sampling_message() -> str:
    packs = ", ".join(list_packs())
    return ("source: this MCP client does not support sampling, so its LLM cannot draft facts. "
            f"Fix: use a built-in pack instead, e.g. {{'source': {{'kind': 'pack', 'domains': ['{list_packs()[0]}']}}}}"
            f" (packs: {packs}; read neurotrace://packs), or pass your own facts with source kind 'spec'.")


def draft_request(request: GenerateFactsRequest, ctx: Context) -> Sample | None:
    """Ask the client's LLM to draft facts when the source is 'sampling'; None otherwise."""
    source = request.source
    if not isinstance(source, SamplingSource):
        return None
    caps = ctx.client_capabilities
    if caps is None or caps.sampling is None:
        raise ToolError(no_sampling_message())
    text = drafting_prompt(source.domain, source.count)
    message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=text))
    return Sample([message], max_tokens=300 * source.count + 500, system_prompt=SYSTEM_PROMPT, temperature=0.2)


def reply_text(reply: types.CreateMessageResult) -> str:
    content = reply.content if isinstance(reply.content, list) else [reply.content]
    return "\n".join(c.text for c in content if isinstance(c, types.TextContent))


async def generate_facts(
    request: GenerateFactsRequest, ctx: Context,
    draft: Annotated[types.CreateMessageResult | None, Resolve(draft_request)] = None,
) -> Annotated[CallToolResult, GenerateFactsResult]:
    """Build a validated fact dataset for trace: from a built-in domain pack, a DatasetSpec, ROME known facts,
    or facts drafted by your own LLM (MCP sampling). Use it first, before trace.

    Checks every fact (one '{}' in the template, context word in the template, clean != corrupt subject) and,
    for each model in `models`, that the target is one token (or applies multi_token='first_token'). Writes
    dataset.json + run_config.json; pass the returned run_id to trace as dataset_run_id. Drafted facts that
    fail are dropped and listed; bad facts from packs/specs/ROME files are errors naming facts[i].field.
    """
    fn = run_generate_facts
    if draft is not None:
        text = reply_text(draft)
        fn = partial(run_generate_facts, draft_fn=lambda _domain, _count: text)
    return await run_in_lab(ctx, fn, request)
