"""Every JSON request example an agent reads is valid for the tool it names.

Examples are the ``{"request": {...}}`` blocks in SKILL.md, README.md and the rendered MCP prompts.
Each belongs to the tool whose backticked name opens the paragraph right after its code fence
(SKILL.md's "```json ... ``` `trace` reads ..."), else to the tool named last before it by a heading
(``## trace``) or a call phrase (``Call `trace` with``, ```trace```:);
bare placeholders such as ``DATASET`` stand for run ids and are read as strings. The block is
validated against that tool's request model, so ``{"model": ...}`` for a tool that takes ``models``
fails here.
"""

import json
import re
from pathlib import Path

import pytest
from mcp import Client

from neurotrace import EXPERIMENTS
from neurotrace.lab.lab import LabSettings
from neurotrace.server import build_server

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("SKILL.md", "README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
NAMING = re.compile(r"^#+\s+`?(\w+)`?\s*$|`(\w+)`(?=\s+with\b|:)", re.MULTILINE)
PLACEHOLDER = re.compile(r'(?<=[:\[,])(\s*)([A-Z][A-Z0-9_]+)(?=\s*[,}\]])')


def request_models() -> dict[str, type]:
    """Tool name -> its request model, from the declared experiments."""
    return {e.name: e.request for e in EXPERIMENTS}


def blocks(text: str) -> list[tuple[int, str]]:
    """(offset, source) of every balanced ``{"request": ...}`` object in ``text``."""
    found = []
    for m in re.finditer(r'\{\s*"request"\s*:', text):
        depth, i = 0, m.start()
        for j in range(m.start(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                found.append((i, text[i:j + 1]))
                break
    return found


def examples(name: str, text: str, tools: set[str]) -> list[tuple[str, str, str]]:
    """(where, tool, json source) for each example; the tool is the last one a heading or call phrase names."""
    out = []
    for offset, src in blocks(text):
        after = re.match(r"\s*```\s*`(\w+)`", text[offset + len(src):])
        named = [a or b for a, b in NAMING.findall(text[:offset]) if (a or b) in tools]
        if after and after.group(1) in tools:
            named.append(after.group(1))
        line = text[:offset].count("\n") + 1
        out.append((f"{name}:{line}", named[-1] if named else "", src))
    return out


async def prompt_texts() -> dict[str, str]:
    async with Client(build_server(LabSettings(runs_dir=ROOT / ".pytest-runs-unused"))) as client:
        texts = {}
        for prompt in (await client.list_prompts()).prompts:
            result = await client.get_prompt(prompt.name, {})
            texts[f"prompt {prompt.name}"] = "\n".join(m.content.text for m in result.messages
                                                       if getattr(m.content, "text", None))
        return texts


def all_examples(prompts: dict[str, str]) -> list[tuple[str, str, str]]:
    tools = set(request_models())
    out = []
    for doc in DOCS:
        out += examples(doc, (ROOT / doc).read_text(encoding="utf-8"), tools)
    for name, text in prompts.items():
        out += examples(name, text, tools)
    return out


@pytest.mark.anyio
async def test_every_request_example_validates_against_its_tools_request_model():
    models = request_models()
    found = all_examples(await prompt_texts())
    assert len(found) >= 10, "expected request examples in SKILL.md, README.md and the prompts"
    problems = []
    for where, tool, src in found:
        if not tool:
            problems.append(f"{where}: no tool named in backticks before the example")
            continue
        try:
            data = json.loads(PLACEHOLDER.sub(r'\1"\2"', src))
            models[tool].model_validate(data["request"])
        except (ValueError, KeyError) as exc:
            problems.append(f"{where} ({tool}): {str(exc).splitlines()[0:3]}")
    assert not problems, "\n".join(problems)


def test_a_wrong_field_name_is_caught():
    models = request_models()
    text = 'Call `trace` with {"request": {"model": "fact-gpt2", "dataset_run_id": DATASET}}'
    (where, tool, src), = examples("probe", text, set(models))
    with pytest.raises(ValueError):
        models[tool].model_validate(json.loads(PLACEHOLDER.sub(r'\1"\2"', src))["request"])
