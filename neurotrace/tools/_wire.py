"""The tool list as agents receive it: small, with the full schemas one resource read away.

Every tool's full pydantic schema (nested unions of edits, policies, corruptions; the result model)
would cost an agent ~18K tokens of context before its first call. On the wire each tool therefore
advertises the first paragraph of its description and a compact input schema: the ``request`` object's own
fields with their type, choices and default, and for the fields a caller must fill the first sentence of
their description; a nested object, list of objects or union says only its kind; bounds and every
optional field's description are in ``neurotrace://schemas/<tool>`` (the server's instructions name it),
and the server's errors name a violated bound and its fix; optional fields drop ``null``.
The result schema is advertised compactly too (:func:`compact_output_schema`: the required fields and
their JSON types, so a client can validate ``structuredContent``; every field with its description is in
the same resource). Arguments are still validated against the full request model, so nothing is
loosened: a compact schema only describes less.
"""

import re
from typing import Any

from mcp_types import Tool

SCHEMA_URI = "neurotrace://schemas/{tool}"
MAX_DESCRIPTION = 60  # characters of a field's description kept on the wire
SCALARS = ("string", "integer", "number", "boolean", "null")
#: fields whose meaning their name and the server's instructions carry (a model reference, a run id, seed,
#: device ...): no description on the wire
SELF_EXPLANATORY = frozenset({"seed", "device", "dtype", "batch_size", "lr", "wait", "model", "run_id"})
#: options every experiment shares, stated once in the server's instructions (not repeated per tool on
#: the wire; each tool's schema resource lists them, and arguments are validated against the full model)
SHARED_FIELDS = frozenset({"device", "seed", "batch_size"})


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


def _field(node: dict[str, Any], defs: dict[str, Any], uri: str, required: bool = True) -> dict[str, Any]:
    """One field on the wire: its type(s) (none beside an ``enum``: the choices say it), choices and default;
    its description (first sentence) only when the caller must fill it (required); bounds and nested detail
    stay in the schema resource."""
    out = _field_schema(node, defs, uri, required)
    if "enum" in out:
        out.pop("type", None)
    if "enum" in out.get("items", {}):
        out["items"].pop("type", None)
    return out


def _field_schema(node: dict[str, Any], defs: dict[str, Any], uri: str, required: bool) -> dict[str, Any]:
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    if node.get("description") and required and uri.rsplit("#", 1)[-1] not in SELF_EXPLANATORY:
        out["description"] = first_sentence(node["description"])
    for key in ("enum", "const"):
        if key in node:
            out[key] = node[key]
    if node.get("default") not in (None, False) and not isinstance(node["default"], dict | list):
        out["default"] = node["default"]   # a flag's false default goes without saying
    variants = [_resolve(v, defs) for v in node.get("anyOf") or node.get("oneOf") or []]
    if variants:
        if all(v.get("type") in SCALARS and "properties" not in v for v in variants):
            kinds = sorted({v["type"] for v in variants} - {"null"}) or ["null"]
            out["type"] = kinds[0] if len(kinds) == 1 else kinds
            return out
        return out
    kind = node.get("type")
    if kind in SCALARS:
        return {**out, "type": kind}
    if kind == "array":
        items = _resolve(node.get("items", {}), defs)
        if items.get("type") in SCALARS:
            return {**out, "type": "array", "items": {k: items[k] for k in ("type", "enum") if k in items}}
        return {**out, "type": "array"}
    return {**out, "type": "object"}


def compact_input_schema(schema: dict[str, Any], tool: str) -> dict[str, Any]:
    """``schema`` (a tool's full input schema) with the request's nested detail replaced by pointers."""
    defs = schema.get("$defs", {})
    properties = schema.get("properties", {})
    uri = SCHEMA_URI.format(tool=tool)
    out: dict[str, Any] = {"type": "object", "properties": {}}
    for name, node in properties.items():
        node = _resolve(node, defs)
        if node.get("type") == "object" and "properties" in node:
            needed = set(node.get("required", []))
            inner = {k: _field(v, defs, f"{uri}#{k}", k in needed or "default" not in _resolve(v, defs))
                     for k, v in node["properties"].items() if k in needed or k not in SHARED_FIELDS}
            out["properties"][name] = {"type": "object", "properties": inner,
                                       **({"required": node["required"]} if node.get("required") else {})}
        else:
            out["properties"][name] = _field(node, defs, f"{uri}#{name}")
    if schema.get("required"):
        out["required"] = schema["required"]
    return out


def _types(node: dict[str, Any], defs: dict[str, Any]) -> str | list[str]:
    """A field's JSON type(s): ``"string"``, ``["array", "null"]``; a referenced model is an object."""
    node = _resolve(node, defs)
    variants = node.get("anyOf") or node.get("oneOf")
    if variants:
        kinds = sorted({k for v in variants for k in _as_list(_types(v, defs))})
        return kinds[0] if len(kinds) == 1 else kinds
    return node.get("type") or ("object" if "properties" in node else "string")


def _as_list(kinds: str | list[str]) -> list[str]:
    return [kinds] if isinstance(kinds, str) else kinds


def _required_types(schema: dict[str, Any], defs: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The required fields and the type of each that is not a plain string (a field without a type
    is unconstrained in JSON Schema, so strings, the common case, cost nothing on the wire)."""
    schema = _resolve(schema, defs)
    required = list(schema.get("required", []))
    props = schema.get("properties", {})
    typed = {name: {"type": _types(props[name], defs)} for name in required if name in props}
    return required, {name: t for name, t in typed.items() if t["type"] != "string"}


def compact_output_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The required fields of a tool's result and their types (and, for a tool that takes ``wait``, the
    ``{run_id, status}`` reply as the other branch); field descriptions stay in the schema resource."""
    if not schema:
        return None
    defs = schema.get("$defs", {})
    branches = schema.get("anyOf") if "properties" not in schema else None
    if not branches:
        required, props = _required_types(schema, defs)
        if not required:
            return None
        return {"type": "object", **({"properties": props} if props else {}), "required": required}
    props: dict[str, Any] = {}
    alternatives = []
    for branch in branches:
        required, typed = _required_types(branch, defs)
        for name, kind in typed.items():
            merged = sorted(set(_as_list(props.get(name, {}).get("type", []))) | set(_as_list(kind["type"])))
            props[name] = {"type": merged[0] if len(merged) == 1 else merged}
        alternatives.append(required)
    common = [name for name in alternatives[0] if all(name in alt for alt in alternatives)]  # run_id
    rest = [{"required": [name for name in alt if name not in common]} for alt in alternatives]
    return {"type": "object", **({"properties": props} if props else {}),
            **({"required": common} if common else {}), "anyOf": rest}


def without_ui(tool: Tool) -> Tool:
    """``tool`` for a client without MCP Apps: the ``_meta.ui`` pointer means nothing to it."""
    meta = {k: v for k, v in (tool.meta or {}).items() if k != "ui"}
    return tool.model_copy(update={"meta": meta or None})


def compact_tool(tool: Tool) -> Tool:
    """The wire form of ``tool``: compact input and output schemas, the schema resource named."""
    head = (tool.description or "").strip().split("\n\n")[0]
    description = " ".join(head.split())   # the server's instructions name neurotrace://schemas/{tool} once
    annotations = tool.annotations
    if annotations is not None:  # the spec's defaults (not read-only, open world) go without saying
        annotations = annotations.model_copy(update={
            "read_only_hint": annotations.read_only_hint or None,
            "open_world_hint": None if annotations.open_world_hint is not False else False})
    return tool.model_copy(update={"input_schema": compact_input_schema(tool.input_schema, tool.name),
                                   "output_schema": compact_output_schema(tool.output_schema),
                                   "description": description, "annotations": annotations})
