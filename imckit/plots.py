"""Plot helpers shared by the chapters and explorers.

Figures are made with :class:`matplotlib.figure.Figure` directly, not ``pyplot``: explorers
render them from a worker thread in JupyterLab, and pyplot's global state is neither
thread-safe nor wanted there (the inline backend would also show them twice).
"""
from __future__ import annotations

import io

from matplotlib.figure import Figure

#: Colours for the three training MVMs, used by every chapter so a reader learns them once.
MVM_COLORS = {"forward": "#1f77b4", "backward": "#ff7f0e", "weight_grad": "#2ca02c"}

#: Colours for quantizer-adaptability modes.
ADAPTABILITY_COLORS = {"full": "#2ca02c", "two-level": "#1f77b4", "one-level": "#ff7f0e",
                       "none": "#7f7f7f"}


def _register_ipython_display(dpi: float = 100) -> None:
    """Let a pyplot-free Figure at the end of a notebook cell display as a PNG.

    IPython only knows how to show figures once pyplot's inline backend is set up; chapters that
    never import pyplot would otherwise print ``<Figure size ...>``.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of ipywidgets
        return
    ip = get_ipython()
    if ip is None:
        return
    ip.display_formatter.formatters["image/png"].for_type(Figure, lambda f: to_png(f, dpi=dpi))


def markdown_table(rows, cols, fmt=None):
    """A list of dicts as a Markdown table for a notebook cell (``fmt``: {column: format spec}).

    >>> print(markdown_table([{"mode": "full", "x": 478.2}], ["mode", "x"], {"x": ".0f"}).data)
    | mode | x |
    |---|---|
    | full | 478 |
    """
    from IPython.display import Markdown

    fmt = fmt or {}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(format(r[c], fmt.get(c, "")) for c in cols) + " |")
    return Markdown("\n".join(lines))


def figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (6.4, 3.6),
           squeeze: bool = True, **subplot_kw):
    """A pyplot-free figure with a grid of axes, laid out with constrained layout.

    >>> fig, ax = figure()
    >>> type(fig).__name__, ax.get_subplotspec().get_geometry()[:2]
    ('Figure', (1, 1))
    """
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, subplot_kw=subplot_kw or None)
    return fig, axes


def to_png(fig: Figure, *, dpi: float = 80, palette: int | None = None) -> bytes:
    """Render a figure to PNG bytes (Agg, no display needed).

    With ``palette=n`` the image is reduced to ``n`` colours (an adaptive palette): line plots
    look the same at about a quarter of the bytes, which keeps precomputed explorers light.

    >>> fig, ax = figure(); _ = ax.plot([0, 1]); to_png(fig)[:4]
    b'\\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not hasattr(fig.canvas, "print_png"):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if palette is None:
        return buf.getvalue()
    from PIL import Image

    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    out = io.BytesIO()
    img.quantize(colors=int(palette), method=Image.Quantize.MEDIANCUT).save(out, format="PNG",
                                                                             optimize=True)
    return out.getvalue()


_register_ipython_display()
