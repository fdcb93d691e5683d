"""Shared matplotlib style for every neurotrace figure: Agg backend, readable fonts, titled figures.

Figures are rendered off-screen (Agg) in worker threads and saved as PNG into run directories, so
importing this module selects the Agg backend before pyplot is imported. ``new_figure`` applies the
house style (larger fonts, light grid, no top/right spines) and returns ``(fig, axes)``; ``finish``
adds a title naming what is shown (model and fact set, per the figure conventions) and tightens the
layout. Style values are set on matplotlib's rcParams once, so figures made with plain ``plt.subplots``
after the first ``new_figure`` call look the same.

Two styles: ``neurotrace`` (the default, for screens) and ``paper`` (serif type, no grid, boxed axes
with inward ticks, for a manuscript). :func:`figure_style` selects one for the figures drawn inside it
(per thread or task, through a context variable); the colour conventions are the same in both.

>>> fig, ax = new_figure(width=5, height=3)
>>> fig = finish(fig, "p(target) restored by layer", "fact-gpt2 on geography")
"""

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import FixedFormatter, FuncFormatter  # noqa: E402

STYLE: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8,
    "figure.titlesize": 12,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.cmap": "viridis",
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
    # keys the paper style changes, so that switching back restores them
    "font.family": ["sans-serif"],
    "mathtext.fontset": "dejavusans",
    "axes.linewidth": 0.8,
    "xtick.direction": "out",
    "ytick.direction": "out",
    "legend.frameon": True,
}
PAPER_STYLE: dict[str, Any] = {
    **STYLE,
    "font.family": ["serif"],
    "font.serif": ["DejaVu Serif", "Times New Roman", "serif"],
    "mathtext.fontset": "dejavuserif",
    "axes.grid": False,
    "axes.spines.top": True,
    "axes.spines.right": True,
    "axes.linewidth": 0.8,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "legend.frameon": False,
}
StyleName = Literal["neurotrace", "paper"]
STYLES: dict[str, dict[str, Any]] = {"neurotrace": STYLE, "paper": PAPER_STYLE}
_STYLE: contextvars.ContextVar[str] = contextvars.ContextVar("neurotrace_figure_style", default="neurotrace")

#: sequential colormap for non-negative effects; diverging for signed ones (centre it at 0)
SEQUENTIAL_CMAP = "Purples"
DIVERGING_CMAP = "RdBu_r"


def apply_style() -> None:
    """Set the current style (see :func:`figure_style`) on matplotlib's rcParams (idempotent)."""
    plt.rcParams.update(STYLES[_STYLE.get()])


@contextmanager
def figure_style(name: StyleName) -> Iterator[None]:
    """Draw the figures made inside this block in style ``name``; the default style is restored after."""
    token = _STYLE.set(name)
    try:
        yield
    finally:
        _STYLE.reset(token)
        apply_style()


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 7.0, height: float = 4.0,
               squeeze: bool = True, **kwargs: Any) -> tuple[Figure, Any]:
    """A styled figure and its axes (``width``/``height`` in inches, for the whole figure)."""
    apply_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=squeeze, **kwargs)
    return fig, axes


def finish(fig: Figure, title: str, subtitle: str | None = None) -> Figure:
    """Add a title (and a smaller subtitle, e.g. model and fact set), spell out characters the font cannot
    draw, and tighten the layout."""
    fig.suptitle(title if not subtitle else f"{title}\n{subtitle}", fontsize=STYLE["figure.titlesize"])
    drawable(fig)
    fig.tight_layout()
    return fig


@lru_cache(maxsize=8)
def _font(path: str) -> Any:
    return font_manager.get_font(path)


@lru_cache(maxsize=4096)
def _has_glyph(path: str, char: str) -> bool:
    return char.isspace() or _font(path).get_char_index(ord(char)) != 0


def drawable(fig: Figure) -> None:
    """Rewrite every text of ``fig`` whose font lacks a glyph (CJK, Thai ... tokens of a real vocabulary)
    with that character as a ``\\uXXXX`` escape, so labels stay legible and no glyph warning is raised.
    Tick labels set from a list live in the axis' formatter (drawn later), so those are rewritten there."""
    path = font_manager.findfont(font_manager.FontProperties(family=matplotlib.rcParams["font.family"]))
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for fmt in (axis.get_major_formatter(), axis.get_minor_formatter()):
                if isinstance(fmt, FixedFormatter):
                    fmt.seq = [_spelled(str(s), path) for s in fmt.seq]
                elif isinstance(fmt, FuncFormatter) and not getattr(fmt.func, "spelled", False):
                    fmt.func = _spelling(fmt.func, path)
    for text in fig.findobj(Text):
        s = text.get_text()
        if s and not s.isascii():
            fixed = _spelled(s, font_manager.findfont(text.get_fontproperties()))
            if fixed != s:
                text.set_text(fixed)


def _spelling(func: Any, path: str) -> Any:
    def spelled(x: Any, pos: Any = None) -> str:
        return _spelled(str(func(x, pos)), path)

    spelled.spelled = True  # type: ignore[attr-defined]
    return spelled


def _spelled(s: str, path: str) -> str:
    if s.isascii():
        return s
    return "".join(c if _has_glyph(path, c) else f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"
                   for c in s)


def short(label: str, limit: int = 40) -> str:
    """A label that fits axes and legends: long paths keep their last part, then long text is cut with '...'.

    >>> short("/tmp/models/fact-gpt2")
    '/tmp/models/fact-gpt2'
    >>> short("/very/long/path/to/some/model/directory/fact-gpt2", 20)
    'fact-gpt2'
    """
    text = str(label)
    if len(text) > limit and "/" in text.rstrip("/"):
        text = text.rstrip("/").rsplit("/", 1)[-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def close(fig: Figure) -> None:
    plt.close(fig)
