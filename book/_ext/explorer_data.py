"""The data behind each explorer of the book, saved while the book's kernels run.

The book build (``imckit_online``) starts every chapter kernel with :func:`install` registered
(an IPython startup file): when a cell displays an :class:`imckit.widgets.Explorer`, every grid
point it precomputed is written to ``$IMCKIT_EXPLORER_DATA/<widget model id>.json`` with what
each figure plots (lines, points, bars, error bars, images, text) and the text of each HTML
part. The build then places it as CSV and JSON next to the chapter's page. Nothing here changes
what a chapter shows, and nothing runs outside the book build.

>>> from matplotlib.figure import Figure
>>> fig = Figure(); ax = fig.add_subplot(); _ = ax.plot([1, 2], [3, 4], label="a")
>>> [s["label"] for s in figure_data(fig)[0]["series"]]
['a']
"""
from __future__ import annotations

import html
import json
import math
import os
import re
from pathlib import Path
from typing import Any

ENV = "IMCKIT_EXPLORER_DATA"
ERRORS = "errors.txt"


def _num(v: Any) -> Any:
    """A JSON value for a number (NaN and infinities as null)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return None
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


def _nums(values) -> list:
    import numpy as np

    arr = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan).ravel()
    return [_num(v) for v in arr]


def _label(artist) -> str | None:
    label = artist.get_label()
    return None if not label or label.startswith("_") else str(label)


def _ticks(ax, axis: str) -> dict:
    ticks = ax.get_xticks() if axis == "x" else ax.get_yticks()
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    named = {float(t): lab.get_text() for t, lab in zip(ticks, labels) if lab.get_text()}
    try:  # numeric tick labels name no category
        [float(v.replace("\u2212", "-")) for v in named.values()]
        return {}
    except ValueError:
        return named


def _category(ticks: dict, value: float) -> str | None:
    for t, text in ticks.items():
        if abs(t - value) < 1e-9:
            return text
    return None


def axes_data(ax) -> dict:
    """What one matplotlib Axes plots, as JSON-ready data."""
    from matplotlib.collections import LineCollection, PathCollection
    from matplotlib.container import BarContainer, ErrorbarContainer

    series: list[dict] = []
    caps, owner = set(), {}  # error-bar caps are drawn as lines: not data
    for cont in ax.containers:
        if isinstance(cont, ErrorbarContainer):
            caps.update(id(c) for c in cont[1])
            if cont[0] is not None:
                owner[id(cont[0])] = _label(cont)
    for line in ax.get_lines():
        if id(line) in caps:
            continue
        x, y = line.get_xdata(orig=True), line.get_ydata(orig=True)
        kind = "line"
        if line.get_transform() is not ax.transData:  # axhline/axvline: one data coordinate
            kind = "vline" if len(set(_nums(x))) == 1 else "hline"
        label = _label(line) or owner.get(id(line))
        series.append({"kind": kind, "label": label, "x": _nums(x), "y": _nums(y)})
    xt, yt = _ticks(ax, "x"), _ticks(ax, "y")
    for cont in ax.containers:
        if isinstance(cont, BarContainer):
            horizontal = getattr(cont, "orientation", "vertical") == "horizontal"
            pos, val, cat = [], [], []
            for rect in cont.patches:
                if horizontal:
                    p, v = rect.get_y() + rect.get_height() / 2, rect.get_x() + rect.get_width()
                    cat.append(_category(yt, p))
                else:
                    p, v = rect.get_x() + rect.get_width() / 2, rect.get_y() + rect.get_height()
                    cat.append(_category(xt, p))
                pos.append(_num(p)), val.append(_num(v))
            entry = {"kind": "barh" if horizontal else "bar", "label": _label(cont)}
            entry.update({"y": pos, "x": val} if horizontal else {"x": pos, "y": val})
            if any(cat):
                entry["category"] = cat
            series.append(entry)
        elif isinstance(cont, ErrorbarContainer):
            lo, hi, xs = [], [], []
            for coll in cont[2]:  # the error bars: one segment per point
                for seg in coll.get_segments():
                    if len(seg) < 2:  # a point with no error bar (its error was NaN)
                        continue
                    (x0, y0), (x1, y1) = seg[0], seg[-1]
                    xs.append(_num(x0)), lo.append(_num(min(y0, y1))), hi.append(_num(max(y0, y1)))
            if xs:
                series.append({"kind": "errorbar", "label": _label(cont), "x": xs,
                               "y_low": lo, "y_high": hi})
    for coll in ax.collections:
        if isinstance(coll, PathCollection):
            off = coll.get_offsets()
            if len(off):
                series.append({"kind": "points", "label": _label(coll),
                               "x": _nums(off[:, 0]), "y": _nums(off[:, 1])})
        elif isinstance(coll, LineCollection) and _label(coll):
            for seg in coll.get_segments():
                series.append({"kind": "segment", "label": _label(coll),
                               "x": _nums(seg[:, 0]), "y": _nums(seg[:, 1])})
    for im in ax.get_images():
        arr = im.get_array()
        if arr is not None and arr.ndim == 2 and arr.size <= 100_000:
            series.append({"kind": "image", "label": _label(im), "extent": _nums(im.get_extent()),
                           "values": [_nums(row) for row in arr]})
    texts = [t.get_text() for t in ax.texts if t.get_text().strip()]
    return {"title": ax.get_title() or None, "xlabel": ax.get_xlabel() or None,
            "ylabel": ax.get_ylabel() or None, "xscale": ax.get_xscale(),
            "yscale": ax.get_yscale(), "series": series, "texts": texts}


def figure_data(fig) -> list[dict]:
    """What every Axes of a figure plots (see :func:`axes_data`)."""
    return [axes_data(ax) for ax in fig.axes if ax.get_visible()]


def html_text(fragment: str) -> str:
    """The readable text of an HTML snippet (tags dropped, cells separated by spaces)."""
    text = re.sub(r"<br\s*/?>|</(?:td|th|p|div|li)>", " ", fragment, flags=re.I)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return re.sub(r"\s+", " ", text).strip()


def _jsonable(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, float)):
        return _num(value)
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist(), depth + 1)
    return repr(value)


def point_data(data: Any) -> dict:
    """One grid point's output: figures as plotted data, HTML as text, anything else as JSON."""
    from matplotlib.figure import Figure

    out: dict = {"figures": [], "text": []}
    items = data if isinstance(data, tuple) else (data,)
    rest = []
    for item in items:
        if isinstance(item, Figure):
            out["figures"].append({"axes": figure_data(item)})
        elif isinstance(item, str):
            out["text"].append(html_text(item))
        else:
            rest.append(_jsonable(item))
    if rest:
        out["data"] = rest[0] if len(rest) == 1 else rest
    return out


def explorer_data(ex) -> dict:
    """Everything an explorer precomputed: its controls and, per grid point, what it shows."""
    controls = [{"name": name, "label": ex.controls[name].description or name,
                 "values": _jsonable(values)} for name, values in ex.grid.items()]
    points = []
    for key, rendered in ex.cache.items():
        entry = {"params": {n: _jsonable(v) for n, v in zip(ex.grid, key)}}
        if rendered.error is not None:
            entry["error"] = html_text(rendered.error)
        else:
            entry.update(point_data(rendered.data))
        points.append(entry)
    title = getattr(ex, "title", None)
    return {"title": title, "controls": controls, "initial": _jsonable(ex.params),
            "points": points}


def save(ex, folder: str | os.PathLike) -> Path:
    """Write an explorer's data to ``folder/<model id>.json`` (the id of its widget)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ex.widget.model_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(explorer_data(ex)))
    tmp.replace(path)
    return path


def install(ip) -> None:
    """Save the data of every explorer this IPython shell displays (when ``$IMCKIT_EXPLORER_DATA``
    is set). The explorer is displayed exactly as without this hook."""
    folder = os.environ.get(ENV)
    if not folder:
        return

    def printer(ex):
        try:
            save(ex, folder)
        except Exception:  # reported by the build as a warning, never in the page
            import traceback

            with open(Path(folder) / ERRORS, "a") as f:
                f.write(traceback.format_exc(limit=-3))
        return ex._repr_mimebundle_()

    ip.display_formatter.mimebundle_formatter.for_type_by_name("imckit.widgets", "Explorer",
                                                               printer)


def csv_rows(data: dict) -> tuple[list[str], list[list]]:
    """The explorer's data in long form: one row per plotted value (or text), one column per
    control, so a spreadsheet can filter by the controls' values."""
    names = [c["name"] for c in data["controls"]]
    header = names + ["figure", "axes", "axes_title", "kind", "label", "category", "x", "y",
                      "y_low", "y_high", "text"]
    rows = []
    for p in data["points"]:
        head = [p["params"].get(n) for n in names]
        for fi, fig in enumerate(p.get("figures", [])):
            for ai, ax in enumerate(fig["axes"]):
                where = [fi, ai, ax["title"]]
                for s in ax["series"]:
                    if s["kind"] == "image":  # x = column, y = row, the value in "text"
                        for r, row in enumerate(s["values"]):
                            rows += [head + where + ["image", s["label"], None, c, r, None, None, v]
                                     for c, v in enumerate(row)]
                        continue
                    n = len(s["x"])
                    col = {k: s.get(k) or [None] * n for k in ("category", "y", "y_low", "y_high")}
                    rows += [head + where + [s["kind"], s["label"], col["category"][i], s["x"][i],
                                             col["y"][i], col["y_low"][i], col["y_high"][i], None]
                             for i in range(n)]
                rows += [head + where + ["text", None, None, None, None, None, None, t]
                         for t in ax["texts"]]
        rows += [head + [None, None, None, "text", None, None, None, None, None, None, t]
                 for t in p.get("text", [])]
        if "error" in p:
            rows.append(head + [None, None, None, "error"] + [None] * 6 + [p["error"]])
    return header, rows
