"""Malformed requests, generated: every reply is a typed error with a message, and the server goes on.

One in-memory session receives >= 500 generated malformed calls spread over every tool (wrong types,
unknown fields, NUL and surrogate text, out-of-range numbers, deep nesting); each reply must be an
``is_error`` result whose text says more than the SDK's bare "Error executing tool X", no call may
take over 10 s, and the server must still answer a well-formed call afterwards.
"""

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server

N_CALLS = 520
JUNK_TEXT = st.one_of(st.text(max_size=30), st.just("\x00"), st.just("\ud800"), st.just("a" * 600),
                      st.just("/proc/self/environ"), st.just("../../etc/passwd"))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), JUNK_TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
FIELDS = ["model", "models", "facts", "prompts", "prompt_file", "layers", "seed", "values", "d_sae", "device",
          "source", "neurons", "run_id", "kind", "capture_run_id", "positions", "batch_size", "corruption"]


def _deep(n: int) -> object:
    value: object = 0
    for _ in range(n):
        value = [value]
    return value


@st.composite
def malformed(draw, tool: str, has_request: bool) -> dict:
    """Arguments that are wrong for ``tool``: always an unknown field, a wrong type or a missing part."""
    how = draw(st.sampled_from(["no_request", "request_type", "junk_field", "junk_top", "deep"]))
    if not has_request:
        return {draw(st.sampled_from(["zz", "request", "x\x00"])): draw(VALUES)}
    if how == "no_request":
        return {}
    if how == "request_type":
        return {"request": draw(st.one_of(SCALARS, st.lists(SCALARS, max_size=3)))}
    request = {name: draw(VALUES) for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True))}
    if how == "junk_top":
        return {"request": request, draw(st.sampled_from(["zz_extra", "\ud800", "wait_"])): draw(VALUES)}
    if how == "deep":
        request["zz_nested"] = _deep(draw(st.integers(min_value=50, max_value=250)))
    else:
        request[draw(st.sampled_from(["zz_unknown", "Model", "\x00", "layers "]))] = draw(VALUES)
    return {"request": request}


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


@settings(max_examples=1, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_malformed_requests_get_typed_errors_and_the_server_keeps_answering(lab, data):
    async def session() -> None:
        async with Client(build_server(lab=lab)) as client:
            tools = [(t.name, "request" in (t.input_schema.get("properties") or {}))
                     for t in (await client.list_tools()).tools]
            tools = [t for t in tools if t[0] != "run_status"] + [("run_status", False)]
            for i in range(N_CALLS):
                name, has_request = tools[i % len(tools)]
                args = data.draw(malformed(name, has_request), label=f"{name}#{i}")
                with anyio.fail_after(10):
                    result = await client.call_tool(name, args)
                text = " ".join(getattr(c, "text", "") for c in result.content)
                assert result.is_error, (name, args)
                assert text.strip() and text.strip() != f"Error executing tool {name}", (name, args, text)
                assert "input_value" not in text and "pydantic.dev" not in text, text
            with anyio.fail_after(10):
                still = await client.call_tool("list_models", {})
            assert not still.is_error

    anyio.run(session)
