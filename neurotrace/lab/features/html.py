"""The ``report.html`` section of a features run: one card per feature page, every text escaped.

Each card shows the feature's frequency and activations, a bar histogram (inline SVG), its top contexts and
quantile samples with each token's background shaded by the feature's activation there (the highlighted
token boxed), and the promoted/suppressed tokens. The run store embeds ``sections/*.html`` in report.html.
"""

import html
from typing import Any

from neurotrace.lab.features.schema import FeaturePage


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _tokens(record: dict[str, Any], peak: float) -> str:
    out = []
    top = record.get("maxValueTokenIndex", -1)
    for i, (tok, val) in enumerate(zip(record["tokens"], record["values"], strict=True)):
        alpha = 0.0 if peak <= 0 else min(1.0, max(0.0, val / peak))
        border = "outline:1px solid #b35900;" if i == top and val > 0 else ""
        title = f' title="{val:.3g}"' if val > 0 else ""
        out.append(f'<span style="background:rgba(255,140,0,{alpha:.2f});{border}"{title}>'
                   f"{_e(tok).replace(chr(10), '&#8629;')}</span>")
    return "<div class='ctx' style='font-family:monospace;white-space:pre-wrap;margin:2px 0'>" + "".join(out) + \
        f" <span class='note'>({record['maxValue']:.3g})</span></div>"


def _histogram(counts: list[float], edges: list[float]) -> str:
    if not counts:
        return ""
    w, h, n = 240, 60, len(counts)
    peak = max(counts) or 1.0
    bars = "".join(f'<rect x="{i * w / n:.1f}" y="{h - c / peak * h:.1f}" width="{w / n - 1:.1f}" '
                   f'height="{c / peak * h:.1f}" fill="#d97706"/>' for i, c in enumerate(counts))
    return (f'<svg width="{w}" height="{h + 14}" role="img" aria-label="activation histogram">{bars}'
            f'<text x="0" y="{h + 12}" font-size="10">0</text><text x="{w - 40}" y="{h + 12}" font-size="10">'
            f"{edges[-1]:.3g}</text></svg>")


def report_section(full_pages: list[dict[str, Any]], pages: list[FeaturePage], site: str) -> str:
    """The HTML of the feature cards (no page chrome: report.html wraps it)."""
    out = [f"<h2>Feature pages ({_e(site)})</h2>"]
    for page, full in zip(pages, full_pages, strict=True):
        peak = page.max_activation
        n_top = len(full["top"])
        promoted = ", ".join(f"{_e(repr(t))} {v:+.3g}" for t, v in zip(full["pos_str"], full["pos_values"],
                                                                      strict=True))
        suppressed = ", ".join(f"{_e(repr(t))} {v:+.3g}" for t, v in zip(full["neg_str"], full["neg_values"],
                                                                        strict=True))
        out += [f"<h3>Feature {page.index}</h3>",
                f"<p class='meta'>fires on {page.frequency:.3%} of tokens{' (dense)' if page.dense else ''} · max {page.max_activation:.4g} · mean when "
                f"firing {page.mean_activation:.4g} · <a href='features/{page.index}.json'>Neuronpedia JSON</a></p>",
                _histogram(full["freq_hist_data_bar_heights"], full["histogram_edges"]),
                f"<p><b>Promotes</b> {promoted}<br><b>Suppresses</b> {suppressed}</p>",
                f"<p><b>Top {n_top} contexts</b></p>",
                *(_tokens(r, peak) for r in full["activations"][:n_top])]
        bands = [r for r in full["activations"][n_top:]]
        if bands:
            out.append("<p><b>Samples across quantile bands</b> (highest band first)</p>")
            last = None
            for r in bands:
                band = (r["binMin"], r["binMax"])
                if band != last:
                    out.append(f"<p class='note'>band {band[0]:.3g} – {band[1]:.3g}</p>")
                    last = band
                out.append(_tokens(r, peak))
    return "\n".join(out)
