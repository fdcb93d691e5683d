"""The tool list as agents receive it: small, with the full schemas one resource read away.

Every tool's full pydantic schema (nested unions of edits, policies, corruptions; the result model)
would cost an agent ~18K tokens of context before its first call. On the wire each tool therefore
advertises the first paragraph of its description and a compact input schema: the ``request`` object's own fields with their type, bounds,
choices, default and the first sentence of their description; a nested object, list of objects or
union says only its kind and where its full schema is (``(nested: see <tool>#<field>)``, i.e.
``neurotrace://schemas/<tool>``, as the tool's description says); optional fields drop ``null``.
The result schema is not advertised (results still carry ``structuredContent``; its schema is in
the same resource). Arguments are still validated against the full request model, so nothing is
loosened: a compact schema only describes less.
"""

import re
from typing import Any

from mcp_types import Tool

SCHEMA_URI = "neurotrace://schemas/{tool}"
MAX_DESCRIPTION = 60  # characters of a field's description kept on the wire
SCALARS = ("string", "integer", "number", "boolean", "null")
#: fields whose meaning their name and the tool docs carry (seed, device ...): no description on the wire
SELF_EXPLANATORY = frozenset({"seed", "device", "dtype", "batch_size", "lr", "wait"})
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
          "minItems", "maxItems")


_EXAMPLES = re.compile(r"\s*\((?:e\.g\.|i\.e\.)[^)]*\)")   # "(e.g. 'fact-gpt2')": dropped on the wire
_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)(?<!\bvs)\.(?=\s|$)")


def first_sentence(text: str, limit: int = MAX_DESCRIPTION) -> str:
    """The first sentence of ``text`` (a period after e.g., i.e., etc. or vs. does not end it; parenthesised
    examples are left out), cut at a word boundary to at most ``limit`` characters."""
    text = _EXAMPLES.sub("", text)
    m = _END.search(text)
    head = " ".join((text[: m.end()] if m else text).split())
    if len(head) > limit and ", e.g. " in head:      # a long example list: the field's own words suffice
        head = head.split(", e.g. ", 1)[0] + "."
    return head if len(head) <= limit else head[: limit - 1].rsplit(" ", 1)[0] + "…"


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = {**defs[node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _pointer(out: dict[str, Any], uri: str) -> dict[str, Any]:
    out["description"] = f"{out.get('description', '')} (nested: see {uri.rsplit('/', 1)[-1]})".strip()
    return out


def _field(node: dict[str, Any], defs: dict[str, Any], uri: str) -> dict[str, Any]:
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    if node.get("description") and uri.rsplit("#", 1)[-1] not in SELF_EXPLANATORY:
        out["description"] = first_sentence(node["description"])
    for key in ("enum", "const", *BOUNDS):
        if key in node:
            out[key] = node[key]
    if node.get("default") is not None and not isinstance(node["default"], dict | list):
        out["default"] = node["default"]
    variants = [_resolve(v, defs) for v in node.get("anyOf") or node.get("oneOf") or []]
    if variants:
        if all(v.get("type") in SCALARS and "properties" not in v for v in variants):
            kinds = sorted({v["type"] for v in variants} - {"null"}) or ["null"]
            out["type"] = kinds[0] if len(kinds) == 1 else kinds
            return out
        return _pointer(out, uri)
    kind = node.get("type")
    if kind in SCALARS:
        return {**out, "type": kind}
    if kind == "array":
        items = _resolve(node.get("items", {}), defs)
        if items.get("type") in SCALARS:
            return {**out, "type": "array", "items": {k: items[k] for k in ("type", "enum") if k in items}}
        return _pointer({**out, "type": "array"}, uri)
    return _pointer({**out, "type": "object"}, uri)


def compact_input_schema(schema: dict[str, Any], tool: str) -> dict[str, Any]:
    """``schema`` (a tool's full input schema) with the request's nested detail replaced by pointers."""
    defs = schema.get("$defs", {})
    properties = schema.get("properties", {})
    uri = SCHEMA_URI.format(tool=tool)
    out: dict[str, Any] = {"type": "object", "properties": {}}
    for name, node in properties.items():
        node = _resolve(node, defs)
        if node.get("type") == "object" and "properties" in node:
            inner = {k: _field(v, defs, f"{uri}#{k}") for k, v in node["properties"].items()}
            out["properties"][name] = {"type": "object", "properties": inner,
                                       **({"required": node["required"]} if node.get("required") else {})}
        else:
            out["properties"][name] = _field(node, defs, f"{uri}#{name}")
    if schema.get("required"):
        out["required"] = schema["required"]
    return out


def compact_tool(tool: Tool) -> Tool:
    """The wire form of ``tool``: compact input schema, no output schema, the schema resource named."""
    head = (tool.description or "").strip().split("\n\n")[0]
    description = " ".join(head.split()) + f" Schemas: {SCHEMA_URI.format(tool=tool.name)}"
    annotations = tool.annotations
    if annotations is not None and annotations.read_only_hint is False:  # the spec's default: say nothing
        annotations = annotations.model_copy(update={"read_only_hint": None})
    return tool.model_copy(update={"input_schema": compact_input_schema(tool.input_schema, tool.name),
                                   "output_schema": None, "description": description, "annotations": annotations})
