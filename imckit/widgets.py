"""Explorers: sliders over a small grid that stay alive in the web book and recompute in JupyterLab.

A chapter writes::

    def point(gain, n):                       # one grid point -> a figure
        fig, ax = ik.plots.figure()
        ...
        return fig

    ik.widgets.explore(point, gain=[2, 10, 100, 400], n=[1, 2, 3])

and gets one control per keyword. Two modes, chosen automatically:

* ``static`` (the book build, where ``IMCKIT_BOOK_BUILD=1`` is set by ``book/_ext``): every grid
  point is computed once, rendered to a frame and placed in nested ``Stack`` widgets whose
  ``selected_index`` is ``jslink``-ed to the controls. The links run in the page's JavaScript,
  so the sliders of the rendered page still change the figure with no kernel.
* ``live`` (JupyterLab): the first point is computed at once; moving a control computes the new
  point in a worker thread. A point that reports how far it is (a generator yielding
  ``(figure, fraction)``, or ``progress(fraction)``) fills a progress bar; one that reports no
  fraction shows only its elapsed time, never an empty bar. Moving a control away from a point
  abandons it (generators and functions taking ``progress`` are cancelled at their next step),
  and the status and bar clear at once; every finished point is cached. With ``live=`` the
  controls of a live explorer move over finer values than the page precomputes.

A slider's values must increase from left to right (a control running backwards reads wrong).

Each frame (one grid point, in both modes) is an ``HTML`` widget holding a ``<figure
class="imckit-frame">``: its PNG images as ``<img>`` with alt text, and a caption naming the
setting shown, so the caption follows the controls and a screen reader hears what each frame
plots. The alt text names the explorer (``title``), the setting, and what the figure shows:
the chapter's own description (``alt=``, a template or a function of the point) or, without
one, the figure's titles, axis labels and legend (:func:`describe`). The book build reuses the
initial frame as the page's static fallback (``book/_ext/imckit_online.py``).

``fn`` returns a :class:`matplotlib.figure.Figure` (best made with :func:`imckit.plots.figure`,
not pyplot), an HTML string, or a tuple of those. With ``plot=``, ``fn`` returns data and
``plot(data)`` draws it, so tests can check the data. A point that raises shows a readable
message instead of a traceback.
"""
from __future__ import annotations

import base64
import html
import inspect
import itertools
import os
import re
import string
import threading
import time
from typing import Any, Callable, Sequence

import ipywidgets as W
from ipywidgets.widgets.widget_string import HTMLStyle
from matplotlib.category import StrCategoryFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, FuncFormatter

from ._validate import check_choice
from .plots import to_png

MODES = ("auto", "static", "live")
_MAX_POINTS = 200  # a precomputed grid beyond this makes the page too heavy
FRAME_CLASS = "imckit-frame"  # the <figure> of one frame; book/_ext/imckit_online.py finds it


class Superseded(Exception):
    """Raised inside a live computation when a newer slider value has been requested."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _close_pyplot(fig: Figure) -> None:
    """Close figures made with pyplot, which the inline backend would otherwise show again."""
    import sys

    plt = sys.modules.get("matplotlib.pyplot")
    number = getattr(fig, "number", None)
    if plt is not None and number is not None and plt.fignum_exists(number):
        plt.close(fig)


def describe(fig: Figure) -> str:
    """What a figure shows, in words, for its alt text: titles, axes, scales, named categories
    (text tick labels) and legend entries.

    >>> from imckit.plots import figure
    >>> fig, (ax, bx) = figure(1, 2); _ = ax.loglog([1, 10], [1, 5], label="n = 2")
    >>> _ = ax.set(title="G = 400", xlabel="gain G", ylabel="savings"); _ = ax.legend()
    >>> _ = bx.barh(["adc", "thermal"], [30, 41]); _ = bx.set_xlabel("SQNR (dB)")
    >>> describe(fig)
    'G = 400: savings against gain G (log-log); legend: n = 2; SQNR (dB) by adc, thermal'
    """
    def words(text: str) -> str:
        return re.sub(r"\s+", " ", text).strip()

    out = []
    sup = getattr(fig, "_suptitle", None)
    if sup is not None and words(sup.get_text()):
        out.append(words(sup.get_text()))
    for ax in fig.axes:
        if not ax.get_visible() or not ax.has_data():
            continue
        x, y, title = words(ax.get_xlabel()), words(ax.get_ylabel()), words(ax.get_title())
        what = f"{y} against {x}" if x and y else (x or y or "a plot")
        for axis in (ax.xaxis, ax.yaxis):     # categories: ticks named by text, not numbers
            fmt = axis.get_major_formatter()
            if isinstance(fmt, (FixedFormatter, StrCategoryFormatter)) or (  # set_ticks(labels=)
                    isinstance(fmt, FuncFormatter) and isinstance(axis.get_major_locator(),
                                                                  FixedLocator)):
                names = [words(t.get_text()) for t in axis.get_ticklabels()]
                if any(names):
                    what += " by " + ", ".join(n for n in names if n)
        logs = [a for a, sc in (("x", ax.get_xscale()), ("y", ax.get_yscale())) if sc == "log"]
        if logs:
            what += " (log-log)" if len(logs) == 2 else f" (log {logs[0]})"
        legend = ax.get_legend()
        entries = [words(t.get_text()) for t in legend.get_texts()] if legend else []
        if any(entries):
            what += "; legend: " + ", ".join(e for e in entries if e)
        out.append(f"{title}: {what}" if title else what)
    return "; ".join(out) if out else "a figure"


class Rendered:
    """One rendered grid point: PNG images (each with its alt text) and HTML snippets, a caption,
    or an error message."""

    def __init__(self, parts: Sequence[bytes | str] = (), error: str | None = None, data: Any = None,
                 alt: Sequence[str] = (), caption: str = ""):
        self.parts = list(parts)
        self.error = error
        self.data = data
        self.alt = list(alt)          # one per PNG part, in order
        self.caption = caption
        self._widget: W.Widget | None = None

    @property
    def nbytes(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else len(p.encode()) for p in self.parts) + (
            len(self.error.encode()) if self.error else 0) + sum(
            len(a.encode()) for a in self.alt) + len(self.caption.encode())

    @property
    def html(self) -> str:
        """The frame as HTML: ``<figure class="imckit-frame">`` with the images (PNG data URLs
        with alt text), the HTML parts and the caption; an error shows its message."""
        if self.error is not None:
            return self.error
        alts = iter(self.alt)
        body = []
        for p in self.parts:
            if isinstance(p, bytes):
                b64 = base64.b64encode(p).decode()
                body.append(f'<img src="data:image/png;base64,{b64}" '
                            f'alt="{html.escape(next(alts, ""), quote=True)}" '
                            'style="display:block;max-width:100%;height:auto">')
            else:
                body.append(f"<div>{p}</div>")
        caption = (f'<figcaption style="font-size:0.9em;line-height:1.4;margin-top:0.25em">'
                   f"{html.escape(self.caption)}</figcaption>") if self.caption else ""
        return (f'<figure class="{FRAME_CLASS}" style="margin:0">{"".join(body)}{caption}'
                "</figure>")

    def widget(self, layout: W.Layout | None = None, style: W.Widget | None = None) -> W.Widget:
        """The widget showing this point (made once: revisiting a point reuses it). An explorer
        passes one ``layout`` and ``style`` to all its frames: the page stores them once."""
        if self._widget is None:
            shared = {k: v for k, v in (("layout", layout), ("style", style)) if v is not None}
            self._widget = W.HTML(self.html, **shared)
        return self._widget


def _error_html(params: dict, exc: BaseException) -> str:
    where = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
    return ("<div style='padding:1em;border:1px solid #c66;background:#fff4f4;color:#900'>"
            f"<b>This point could not be computed</b> ({html.escape(where)}):<br>"
            f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</div>")


class Explorer:
    """Controls over a grid of parameter values and the figure for the selected point.

    Use :func:`explore` to make one. Attributes useful in tests: :attr:`controls` (name ->
    widget), :attr:`params` (the selected point), :meth:`set` (move controls), :meth:`wait`,
    :meth:`current` (the rendered selected point), :attr:`cache`.
    """

    def __init__(self, fn: Callable, grid: dict[str, Sequence], *, mode: str = "auto",
                 plot: Callable | None = None, labels: dict[str, str] | None = None,
                 initial: dict[str, Any] | None = None, title: str | None = None,
                 dpi: float = 80, live: dict[str, Sequence] | None = None,
                 alt: str | Callable[..., str] | None = None):
        check_choice("mode", mode, MODES)
        if not callable(fn):
            raise ValueError(f"fn={fn!r} is not allowed: it must be callable")
        if not grid:
            raise ValueError("grid={} is not allowed: give at least one keyword with a list of values")
        self.grid = {}
        for name, values in grid.items():
            values = list(values) if not isinstance(values, (str, bytes)) else [values]
            if not values:
                raise ValueError(f"{name}={values!r} is not allowed: give at least one value")
            self.grid[name] = values
        if mode == "auto":
            mode = "static" if os.environ.get("IMCKIT_BOOK_BUILD") == "1" else "live"
        for name, values in (live or {}).items():
            check_choice("live key", name, self.grid)
            values = list(values)
            if not values:
                raise ValueError(f"live {name}={values!r} is not allowed: give at least one value")
            if mode == "live":
                self.grid[name] = values
        for name, values in self.grid.items():
            if all(_is_number(v) for v in values) and any(
                    b <= a for a, b in zip(values, values[1:])):
                raise ValueError(f"{name}={values!r} is not allowed: a slider's values must "
                                 "increase from left to right")
        n_points = 1
        for v in self.grid.values():
            n_points *= len(v)
        if mode == "static" and n_points > _MAX_POINTS:
            raise ValueError(f"grid size={n_points} is out of range for a precomputed explorer: "
                             f"allowed 1..{_MAX_POINTS} points")
        labels = labels or {}
        initial = initial or {}
        for k in list(labels) + list(initial):
            check_choice("labels/initial key", k, self.grid)
        for k, v in initial.items():
            if v not in self.grid[k]:
                raise ValueError(f"initial {k}={v!r} is not allowed: choose one of "
                                 + ", ".join(_fmt(x) for x in self.grid[k]))
        if isinstance(alt, str):
            for _, field, _, _ in string.Formatter().parse(alt):
                name = re.split(r"[.\[]", field)[0] if field is not None else None
                if name is not None and name not in self.grid:
                    raise ValueError(f"alt field {{{field}}} is not allowed: use the names of the "
                                     "grid, " + ", ".join(self.grid))
        elif alt is not None and not callable(alt):
            raise ValueError(f"alt={alt!r} is not allowed: give a template string or a function")
        self.fn, self.plot, self.mode, self.dpi = fn, plot, mode, dpi
        self.title, self.alt = title, alt
        self.labels = {name: labels.get(name, name) for name in self.grid}
        # one layout and style for all frames: ~1.5 KB less per frame in the page's widget state
        self._frame_layout = W.Layout()
        self._frame_style = HTMLStyle()
        self.n_points = n_points
        self.cache: dict[tuple, Rendered] = {}
        self.computations = 0  # finished computations (tests check caching with it)
        self.cancelled = 0     # computations abandoned because a newer value came
        self._takes_progress = "progress" in inspect.signature(fn).parameters
        self._lock = threading.Condition()
        self._wanted: tuple | None = None
        self._busy = False
        self._worker: threading.Thread | None = None

        self.controls: dict[str, W.Widget] = {}
        for name, values in self.grid.items():
            opts = [(_fmt(v), v) for v in values]
            desc = self.labels[name]
            if all(_is_number(v) for v in values):
                ctrl = W.SelectionSlider(options=opts, description=desc, continuous_update=False,
                                         style={"description_width": "initial"},
                                         layout=W.Layout(width="420px"))
            else:
                ctrl = W.ToggleButtons(options=opts, description=desc,
                                       style={"description_width": "initial",
                                              "button_width": "auto"})
            ctrl.index = values.index(initial[name]) if name in initial else 0
            self.controls[name] = ctrl
        header = [W.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        if mode == "static":
            self.panel = self._build_static()
            self._status = None
            self._bar = None
        else:
            self._image_box = W.Box()
            self._status = W.HTML("")
            self._bar = W.FloatProgress(value=0, min=0, max=1, layout=W.Layout(width="420px",
                                                                               visibility="hidden"))
            self.panel = W.VBox([self._image_box, W.HBox([self._bar, self._status])])
            self._show(self._compute_now(self.key))
            for ctrl in self.controls.values():
                ctrl.observe(self._on_change, names="index")
        self.widget = W.VBox([*header, *self.controls.values(), self.panel])

    # --- selection -------------------------------------------------------------------------
    @property
    def key(self) -> tuple:
        return tuple(self.grid[n][self.controls[n].index] for n in self.grid)

    @property
    def params(self) -> dict[str, Any]:
        """The selected grid point, ``{name: value}``."""
        return dict(zip(self.grid, self.key))

    def set(self, **values) -> "Explorer":
        """Move controls to the given values (as a reader would)."""
        for k, v in values.items():
            check_choice("control", k, self.grid)
            if v not in self.grid[k]:
                raise ValueError(f"{k}={v!r} is not allowed: choose one of "
                                 + ", ".join(_fmt(x) for x in self.grid[k]))
            self.controls[k].index = self.grid[k].index(v)
        return self

    def current(self) -> Rendered | None:
        """The rendered selected point (``None`` while it is still being computed)."""
        return self.cache.get(self.key)

    # --- computing one point ---------------------------------------------------------------
    def setting(self, params: dict[str, Any]) -> str:
        """A point in words, with the controls' labels: ``"gain G = 400, MVMs on IMC = 2"``."""
        return ", ".join(f"{self.labels[k]} = {_fmt(v)}" for k, v in params.items())

    def _describe(self, params: dict[str, Any], data: Any, figures: list[Figure]) -> list[str]:
        """The alt text of each figure of a point: explorer, setting, then what it shows."""
        head = f"{self.title or 'Explorer'} at {self.setting(params)}"
        if isinstance(self.alt, str):
            told = self.alt.format(**params)
        elif self.alt is not None:
            kwargs = dict(params)
            if "data" in inspect.signature(self.alt).parameters:
                kwargs["data"] = data
            told = str(self.alt(**kwargs))
        else:
            told = None
        texts = []
        for i, fig in enumerate(figures):
            what = told if told is not None else describe(fig)
            of = f" (figure {i + 1} of {len(figures)})" if len(figures) > 1 else ""
            texts.append(f"{head}{of}: {what}")
        return texts

    def _rendered(self, out: Any, params: dict[str, Any], data: Any = None) -> Rendered:
        items = out if isinstance(out, tuple) else (out,)
        parts: list[bytes | str] = []
        figures = []
        for item in items:
            if isinstance(item, Figure):
                figures.append(item)
            elif not isinstance(item, str):
                raise TypeError(f"an explorer function must return a matplotlib Figure, an HTML "
                                f"string or a tuple of those, not {type(item).__name__}")
        alt = self._describe(params, data, figures)  # before the figures are closed
        for item in items:
            if isinstance(item, Figure):
                parts.append(to_png(item, dpi=self.dpi, palette=256))
                _close_pyplot(item)
            else:
                parts.append(item)
        return Rendered(parts, data=data, alt=alt, caption=f"Shown at {self.setting(params)}.")

    def _evaluate(self, key: tuple, progress: Callable[[float], None],
                  on_partial: Callable[[Rendered], None] | None) -> Rendered:
        params = dict(zip(self.grid, key))
        kwargs = dict(params)
        if self._takes_progress:
            kwargs["progress"] = progress
        try:
            out = self.fn(**kwargs)
            if inspect.isgenerator(out):
                gen, last = out, None
                try:
                    for item in gen:
                        if isinstance(item, tuple) and len(item) == 2 and _is_number(item[1]):
                            item, frac = item
                            progress(float(frac))
                        else:
                            progress(None)
                        last = item
                        if on_partial is not None:
                            on_partial(self._rendered(self.plot(item) if self.plot else item,
                                                      params, item))
                finally:
                    gen.close()
                out = last
            return self._rendered(self.plot(out) if self.plot else out, params, out)
        except Superseded:
            raise
        except Exception as exc:  # a readable message in the panel, not a traceback
            return Rendered(error=_error_html(params, exc))

    def _compute_now(self, key: tuple) -> Rendered:
        if key not in self.cache:
            self.cache[key] = self._evaluate(key, lambda frac=None: None, None)
            self.computations += 1
        return self.cache[key]

    # --- static mode -----------------------------------------------------------------------
    def _build_static(self) -> W.Widget:
        names = list(self.grid)
        self.links: list = []  # browser-side links control.index -> stack.selected_index
        for key in itertools.product(*self.grid.values()):
            self._compute_now(key)

        def level(depth: int, prefix: tuple) -> W.Widget:
            if depth == len(names):
                return self.cache[prefix].widget(self._frame_layout, self._frame_style)
            stack = W.Stack([level(depth + 1, prefix + (v,)) for v in self.grid[names[depth]]])
            stack.selected_index = self.controls[names[depth]].index
            # Runs in the browser: the rendered page needs no kernel to follow the control.
            self.links.append(W.jslink((self.controls[names[depth]], "index"),
                                       (stack, "selected_index")))
            return stack

        return level(0, ())

    @property
    def page_weight_kb(self) -> float:
        """Approximate size this explorer adds to a web page (base64 images + HTML), in KB."""
        return sum(r.nbytes for r in self.cache.values()) * 4 / 3 / 1024

    # --- live mode -------------------------------------------------------------------------
    def _show(self, rendered: Rendered) -> None:
        self._image_box.children = (rendered.widget(self._frame_layout, self._frame_style),)

    def _on_change(self, change=None) -> None:
        key = self.key
        if key in self.cache:
            with self._lock:
                self._wanted = None           # a computation still running is abandoned
                self._lock.notify_all()
            self._show(self.cache[key])
            self._set_status("")
            return
        with self._lock:
            self._wanted = key
            self._lock.notify_all()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, daemon=True,
                                                name="imckit-explorer")
                self._worker.start()

    def _set_status(self, text: str, frac: float | None = None) -> None:
        """Status text and bar: the bar shows only while a computation reports a fraction."""
        if self._status is None:
            return
        self._status.value = text
        if not text:
            self._bar.value = 0
            self._bar.layout.visibility = "hidden"
        elif frac is not None:
            self._bar.layout.visibility = "visible"
            self._bar.value = max(0.0, min(1.0, frac))

    @property
    def status(self) -> dict:
        """What a reader sees below a live figure: ``{"text", "bar_visible", "bar"}``."""
        if self._status is None:
            return {"text": "", "bar_visible": False, "bar": 0.0}
        return {"text": self._status.value, "bar_visible": self._bar.layout.visibility
                == "visible", "bar": self._bar.value}

    def _work(self) -> None:
        while True:
            with self._lock:
                if self._wanted is None:
                    self._busy = False
                    self._lock.notify_all()
                    return
                key, self._wanted = self._wanted, None
                self._busy = True
            where = ", ".join(f"{k}={_fmt(v)}" for k, v in zip(self.grid, key))
            t0 = time.monotonic()

            def progress(frac=None, key=key):
                # A newer wanted point, or the controls moved away (to a cached point):
                # this computation is abandoned, and it must not write the status again.
                if (self._wanted is not None and self._wanted != key) or self.key != key:
                    raise Superseded
                elapsed = time.monotonic() - t0
                self._set_status(f"computing {where} ({elapsed:.1f} s)", frac)

            def on_partial(r, key=key):
                if self.key == key:
                    self._show(r)

            self._bar.value = 0
            self._bar.layout.visibility = "hidden"    # until the point reports a fraction
            self._set_status(f"computing {where}")
            try:
                rendered = self._evaluate(key, progress, on_partial)
            except Superseded:
                self.cancelled += 1
                if self.key in self.cache:    # moved to a cached point: nothing is computing
                    self._set_status("")
                continue
            self.cache[key] = rendered
            self.computations += 1
            if self.key == key:
                self._show(rendered)
            if self.key in self.cache:
                self._set_status("")

    def wait(self, timeout: float = 60.0) -> "Explorer":
        """Block until the live worker is idle (for tests and scripts)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._busy or self._wanted is not None:
                if self._worker is None or not self._worker.is_alive():
                    if self._wanted is None:
                        break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"explorer still computing after {timeout} s")
                self._lock.wait(min(left, 0.05))
        return self

    # --- display ---------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def explore(fn: Callable, *, plot: Callable | None = None, labels: dict[str, str] | None = None,
            initial: dict[str, Any] | None = None, title: str | None = None, mode: str = "auto",
            dpi: float = 80, live: dict[str, Sequence] | None = None,
            alt: str | Callable[..., str] | None = None, **grid: Sequence) -> Explorer:
    """An explorer of ``fn`` over a grid: one control per keyword in ``grid``.

    Args:
        fn: called as ``fn(**point)`` (plus ``progress=`` if it takes one); returns a Figure,
            an HTML string or a tuple of those (or data, with ``plot``). It may be a generator
            yielding intermediate figures (or ``(figure, fraction_done)``); the last is final.
        plot: optional ``plot(data) -> Figure`` applied to what ``fn`` returns.
        labels: control captions, ``{name: text}``.
        initial: starting value per control (default: the first value of each list).
        title: optional heading; it also opens each frame's alt text (default "Explorer").
        mode: ``"auto"`` (static in the book build, live otherwise), ``"static"`` or ``"live"``.
        dpi: resolution of rendered figures (page weight grows with its square).
        live: ``{name: [values...]}`` used instead of the grid's values in live mode, where
            nothing is precomputed: finer values than the page can hold (``initial`` must be
            among both).
        alt: what each frame shows, for its alt text (after the title and the setting, which
            are always there): a template such as ``"savings at G = {gain}"`` filled with the
            point's values, or a function called like ``fn`` (plus ``data=``, what ``fn``
            returned, if it takes it). Default: the figure's titles, axes and legend.
        **grid: ``name=[values...]``; numbers give a slider (values increasing), other values
            toggle buttons.

    >>> from imckit.plots import figure
    >>> def point(gain):
    ...     fig, ax = figure(figsize=(2, 1.5)); ax.plot([0, 1], [0, gain]); return fig
    >>> ex = explore(point, gain=[1, 2, 4], mode="static")
    >>> ex.n_points, len(ex.cache), ex.params
    (3, 3, {'gain': 1})
    >>> ex.current().alt
    ['Explorer at gain = 1: a plot']
    >>> explore(point, gain=[1, 2, 4], alt="a line of slope {gain}", mode="static").cache[(4,)].alt
    ['Explorer at gain = 4: a line of slope 4']
    >>> explore(point, gain=[1, 2, 4], live={"gain": [1, 1.5, 2, 3, 4]}, mode="live").grid
    {'gain': [1, 1.5, 2, 3, 4]}
    """
    return Explorer(fn, grid, mode=mode, plot=plot, labels=labels, initial=initial, title=title,
                    dpi=dpi, live=live, alt=alt)
