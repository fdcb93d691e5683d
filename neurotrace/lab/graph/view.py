"""The interactive view of a pruned graph: one self-contained HTML page (inline SVG + a few lines of
JavaScript, nothing external), embedded in the run's report.html.

Nodes sit at (position, layer): embeddings at the bottom, then each layer's features and error nodes,
logits on top; a node's size grows with its influence. Edges are drawn with width by |weight| (blue
positive, red negative). Hovering a node highlights its edges; clicking it shows its details (id, kind,
activation, influence, name) and, for a feature, the call that opens its feature page.
"""

import html
import json
from collections.abc import Callable
from typing import Any

W, H, PAD = 1000, 560, 40
COLORS = {"feature": "#4c78a8", "error": "#9d9d9d", "embedding": "#54a24b", "logit": "#e45756"}

SCRIPT = """
const nodes = JSON.parse(document.getElementById('graph-data').textContent);
const info = document.getElementById('info');
function show(id){const n=nodes[id];info.textContent=Object.entries(n).map(([k,v])=>k+': '+v).join('\\n');}
document.querySelectorAll('circle[data-id]').forEach(c=>{
  const id=c.dataset.id;
  c.addEventListener('mouseenter',()=>document.querySelectorAll('line').forEach(l=>{
    l.style.opacity=(l.dataset.s===id||l.dataset.t===id)?1:0.06;}));
  c.addEventListener('mouseleave',()=>document.querySelectorAll('line').forEach(l=>{l.style.opacity='';}));
  c.addEventListener('click',()=>show(id));
});
"""


def _layout(nodes: list[dict[str, Any]], n_layers: int, n_pos: int) -> dict[str, tuple[float, float]]:
    rows = n_layers + 2
    slots: dict[tuple[int, int], list[str]] = {}
    for n in nodes:
        row = 0 if n["kind"] == "embedding" else rows - 1 if n["kind"] == "logit" else int(n["layer"]) + 1
        slots.setdefault((row, int(n["pos"])), []).append(n["node_id"])
    where = {}
    col_w = (W - 2 * PAD) / max(1, n_pos)
    for (row, pos), ids in slots.items():
        for j, nid in enumerate(ids):
            x = PAD + col_w * (pos + (j + 1) / (len(ids) + 1))
            y = H - PAD - (H - 2 * PAD) * row / max(1, rows - 1)
            where[nid] = (x, y)
    return where


def render_view(title: str, nodes: list[dict[str, Any]], links: list[dict[str, Any]], tokens: list[str],
                n_layers: int, feature_call: Callable[[int, int], str]) -> str:
    """The page. ``nodes``: dicts with node_id, kind, layer, pos, label, influence, activation, name;
    ``links``: source, target, weight (node ids)."""
    where = _layout(nodes, n_layers, len(tokens))
    top = max((abs(link["weight"]) for link in links), default=1.0) or 1.0
    inf_max = max((n["influence"] or 0.0 for n in nodes), default=1.0) or 1.0
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">']
    col_w = (W - 2 * PAD) / max(1, len(tokens))
    for pos, tok in enumerate(tokens):
        svg.append(f'<text x="{PAD + col_w * (pos + 0.5):.1f}" y="{H - 8}" font-size="11" text-anchor="middle">'
                   f"{html.escape(tok)}</text>")
    for link in links:
        if link["source"] not in where or link["target"] not in where:
            continue
        (x1, y1), (x2, y2) = where[link["source"]], where[link["target"]]
        width = 0.4 + 4 * abs(link["weight"]) / top
        color = "#3070c0" if link["weight"] > 0 else "#d04040"
        svg.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
                   f'stroke-width="{width:.2f}" opacity="0.45" data-s="{html.escape(link["source"])}" '
                   f'data-t="{html.escape(link["target"])}"><title>{link["weight"]:+.3g}</title></line>')
    details = {}
    for n in nodes:
        x, y = where[n["node_id"]]
        r = 3 + 7 * ((n["influence"] or 0.0) / inf_max) ** 0.5 if n["kind"] != "logit" else 7
        nid = html.escape(n["node_id"])
        svg.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{COLORS[n["kind"]]}" data-id="{nid}" '
                   f'style="cursor:pointer"><title>{html.escape(n["label"])}</title></circle>')
        d = {k: n[k] for k in ("label", "kind", "node_id", "activation", "influence", "name") if n.get(k) is not None}
        if n["kind"] == "feature":
            d["feature page"] = feature_call(int(n["layer"]), int(n["feature"]))
        details[n["node_id"]] = d
    svg.append("</svg>")
    data = json.dumps(details).replace("</", "<\\/")
    legend = " ".join(f'<span style="color:{c}">&#9679; {k}</span>' for k, c in COLORS.items())
    return "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      f"<title>{html.escape(title)}</title>", "<style>body{font:13px system-ui,sans-serif;margin:8px}"
                      "#info{white-space:pre-wrap;background:#f6f8fa;padding:6px;min-height:3em}</style></head><body>",
                      f"<div>{html.escape(title)} &middot; layers bottom to top, positions left to right &middot; "
                      f"{legend} &middot; edges: blue +, red &minus;; hover a node for its edges, click for details"
                      "</div>", *svg, '<div id="info">Click a node.</div>',
                      f'<script type="application/json" id="graph-data">{data}</script>',
                      f"<script>{SCRIPT}</script>", "</body></html>", ""])
