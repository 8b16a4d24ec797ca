"""imckit.widgets: explorers in both modes, driven from pytest as a reader would drive them."""
import html.parser
import threading
import time

import ipywidgets as W
import pytest

from imckit import plots, widgets


def line_fig(gain):
    fig, ax = plots.figure(figsize=(2, 1.5))
    ax.plot([0, 1], [0, gain])
    return fig


def stacks_of(widget):
    """All Stack widgets below ``widget``."""
    found, todo = [], [widget]
    while todo:
        w = todo.pop()
        if isinstance(w, W.Stack):
            found.append(w)
        todo.extend(getattr(w, "children", ()))
    return found


def shown_frame(ex):
    """The frame (HTML) a reader sees for the selected point, following the Stack selections."""
    w = ex.panel
    while isinstance(w, W.Stack):
        w = w.children[w.selected_index]
    return w.value


def frame_parts(frame_html):
    """What a browser reads from a frame: the images' (alt, src) and the caption's text."""
    class Reader(html.parser.HTMLParser):
        imgs, caption, in_caption, figures = [], "", False, []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "img":
                self.imgs.append((attrs.get("alt"), attrs.get("src", "")))
            elif tag == "figure":
                self.figures.append(attrs.get("class"))
            self.in_caption = self.in_caption or tag == "figcaption"

        def handle_endtag(self, tag):
            self.in_caption = self.in_caption and tag != "figcaption"

        def handle_data(self, data):
            if self.in_caption:
                self.caption += data

    r = Reader()
    r.imgs, r.figures = [], []
    r.feed(frame_html)
    assert r.figures == [widgets.FRAME_CLASS]
    return r.imgs, r.caption


# --- static mode: the web page without a kernel -----------------------------------------------

def test_static_precomputes_every_point_into_linked_stacks():
    calls = []

    def fn(a, b):
        calls.append((a, b))
        return line_fig(a * b)

    ex = widgets.explore(fn, a=[1, 2, 3], b=["x", "yy"], mode="static")
    assert sorted(calls) == sorted((a, b) for a in [1, 2, 3] for b in ["x", "yy"])
    stacks = stacks_of(ex.widget)
    assert len(stacks) == 1 + 3  # one outer stack over a, one inner stack over b per a value
    # Each stack is jslinked to its control: the link runs in the browser, with no kernel.
    assert len(ex.links) == 4
    for link in ex.links:
        assert link.source[0] in ex.controls.values() and link.source[1] == "index"
        assert link.target[0] in stacks and link.target[1] == "selected_index"
    assert {type(c).__name__ for c in ex.controls.values()} == {"SelectionSlider", "ToggleButtons"}
    assert ex.page_weight_kb > 0


def test_static_stack_selection_follows_the_controls_value_for_value():
    ex = widgets.explore(lambda g: line_fig(g), g=[1, 5, 9], mode="static", initial={"g": 5})
    assert ex.params == {"g": 5}
    assert shown_frame(ex) == ex.cache[(5,)].html
    # In the page, jslink sets selected_index = control index; the stack children are in grid
    # order, so index i must show point i. Check that mapping directly.
    (stack,) = stacks_of(ex.widget)
    for i, g in enumerate([1, 5, 9]):
        assert stack.children[i].value == ex.cache[(g,)].html
    assert len({c.value for c in stack.children}) == 3  # the figures differ


def labelled_fig(gain, kind):
    fig, ax = plots.figure(figsize=(2, 1.5))
    ax.semilogy([0, 1], [1, gain], label=f"kind {kind}")
    ax.set(title=f"G = {gain}", xlabel="time", ylabel="savings")
    ax.legend()
    return fig


def test_every_frame_has_alt_text_naming_the_explorer_and_its_setting_and_a_caption():
    ex = widgets.explore(labelled_fig, gain=[2, 10], kind=["a", "b"], mode="static",
                         title="Savings", labels={"gain": "gain G"})
    seen = set()
    for (gain, kind), rendered in ex.cache.items():
        frame = rendered.widget().value
        assert frame == rendered.html
        (alt, src), = frame_parts(frame)[0]
        assert src.startswith("data:image/png;base64,")
        assert alt == (f"Savings at gain G = {gain}, kind = {kind}: G = {gain}: savings against "
                       f"time (log y); legend: kind {kind}")
        assert frame_parts(frame)[1] == f"Shown at gain G = {gain}, kind = {kind}."
        seen.add(alt)
    assert len(seen) == 4, "every frame has its own alt text"
    # the panel holds these frames: nothing in the page is an image without alt text
    frames = [w for s in stacks_of(ex.widget) for w in s.children if not isinstance(w, W.Stack)]
    assert len(frames) == 4 and all(isinstance(w, W.HTML) for w in frames)
    # one layout and one style for all frames: the page stores them once, not once per frame
    assert len({id(w.layout) for w in frames}) == 1 and len({id(w.style) for w in frames}) == 1


def test_alt_text_from_a_template_or_a_function_of_the_point():
    ex = widgets.explore(labelled_fig, gain=[2, 10], kind=["a"], mode="static",
                         alt="a rising curve to {gain:g}x for kind {kind}")
    assert ex.cache[(10, "a")].alt == ["Explorer at gain = 10, kind = a: a rising curve to 10x "
                                       "for kind a"]

    def told(n, data):
        return f"{len(data)} bars, tallest {max(data)}"

    def bars(data):
        fig, ax = plots.figure(figsize=(2, 1.5))
        ax.bar(range(len(data)), data)
        return fig, plots.figure(figsize=(2, 1.5))[0]

    ex = widgets.explore(lambda n: list(range(1, n + 1)), plot=bars, n=[2, 3], mode="static",
                         alt=told, title="Bars")
    assert ex.cache[(3,)].alt == ["Bars at n = 3 (figure 1 of 2): 3 bars, tallest 3",
                                  "Bars at n = 3 (figure 2 of 2): 3 bars, tallest 3"]
    assert [a for a, _ in frame_parts(ex.cache[(3,)].html)[0]] == ex.cache[(3,)].alt


def test_alt_text_and_caption_are_escaped_in_the_frame():
    ex = widgets.explore(line_fig, gain=[1], mode="static", title='The "<b>" explorer')
    (alt, _), = frame_parts(ex.cache[(1,)].html)[0]
    assert alt.startswith('The "<b>" explorer at gain = 1')
    assert "<b>" not in ex.cache[(1,)].html


@pytest.mark.parametrize("alt, needle", [("G = {gain} {nope}", "alt field {nope}"),
                                         (3, "alt=3")])
def test_a_bad_alt_raises_valueerror_naming_it(alt, needle):
    with pytest.raises(ValueError, match=needle):
        widgets.explore(line_fig, gain=[1, 2], alt=alt, mode="static")


def test_failing_point_shows_a_message_not_a_traceback():
    def fn(x):
        if x == 2:
            raise ValueError("cap_mismatch=-1 is out of range")
        return line_fig(x)

    ex = widgets.explore(fn, x=[1, 2], mode="static")
    msg = ex.cache[(2,)].error
    assert "could not be computed" in msg and "cap_mismatch=-1 is out of range" in msg
    assert "Traceback" not in msg
    assert ex.cache[(1,)].error is None


def test_fn_may_return_html_or_tuples_and_data_with_plot():
    ex = widgets.explore(lambda n: (line_fig(n), f"<b>{n}</b>"), n=[1, 2], mode="static")
    assert isinstance(ex.cache[(1,)].parts[0], bytes) and ex.cache[(1,)].parts[1] == "<b>1</b>"
    ex = widgets.explore(lambda n: {"y": n * 10}, plot=lambda d: line_fig(d["y"]), n=[1, 2],
                         mode="static")
    assert ex.cache[(2,)].data == {"y": 20}


@pytest.mark.parametrize("kwargs, needle", [
    (dict(mode="web"), "mode='web'"),
    (dict(x=[]), "x=[]"),
    (dict(x=[1], initial={"x": 3}), "initial x=3"),
    (dict(x=[1], labels={"y": "why"}), "'y'"),
    (dict(), "grid"),
])
def test_bad_arguments_raise_valueerror_naming_them(kwargs, needle):
    kwargs.setdefault("mode", "static")
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        widgets.explore(line_fig, **kwargs)


def test_static_grid_size_is_bounded():
    with pytest.raises(ValueError, match="grid size=201"):
        widgets.explore(lambda a, b: "", a=list(range(201)), b=[0], mode="static")


def test_auto_mode_follows_the_book_build_flag(monkeypatch):
    monkeypatch.setenv("IMCKIT_BOOK_BUILD", "1")
    assert widgets.explore(line_fig, gain=[1, 2]).mode == "static"
    monkeypatch.delenv("IMCKIT_BOOK_BUILD")
    assert widgets.explore(line_fig, gain=[1, 2]).mode == "live"


# --- live mode: JupyterLab with a kernel ------------------------------------------------------

def test_live_computes_first_point_then_recomputes_on_slider_moves_and_caches():
    calls = []

    def fn(gain):
        calls.append(gain)
        return line_fig(gain)

    ex = widgets.explore(fn, gain=[1, 2, 4], mode="live")
    assert calls == [1] and ex.current() is not None
    first = ex._image_box.children[0].value
    ex.set(gain=4).wait()
    assert calls == [1, 4]
    assert ex._image_box.children[0].value != first  # the reader sees a new figure
    assert ex._image_box.children[0].value == ex.cache[(4,)].html
    first_widget = ex.cache[(1,)].widget()
    ex.set(gain=1).wait()
    assert calls == [1, 4], "a cached point is shown without recomputing"
    assert ex._image_box.children[0].value == first
    assert ex._image_box.children[0] is first_widget, "revisiting a point reuses its widget"


def test_live_newer_value_supersedes_a_slow_stale_computation():
    started = threading.Event()
    finished = []

    def slow(x, progress):
        if x == 2:
            started.set()
        for i in range(200):  # ~2 s unless superseded
            time.sleep(0.01)
            progress(i / 200)
        finished.append(x)
        return line_fig(x)

    ex = widgets.explore(slow, x=[1, 2, 3], mode="live")
    assert finished == [1]
    ex.set(x=2)
    assert started.wait(5)
    t0 = time.monotonic()
    ex.set(x=3).wait(timeout=10)
    assert ex.cancelled == 1 and finished == [1, 3]
    assert (2,) not in ex.cache and ex.params == {"x": 3}
    assert ex._image_box.children[0].value == ex.cache[(3,)].html
    assert time.monotonic() - t0 < 3.5, "the stale point must not run to completion first"


def test_live_generator_shows_intermediate_figures_then_the_final_one():
    shown = []

    def curves(n):
        for epoch in range(1, 4):
            yield line_fig(n * epoch), epoch / 3

    ex = widgets.explore(curves, n=[1, 2], mode="live")
    box = ex._image_box
    box.observe(lambda ch: shown.append(ch["new"][0].value), names="children")
    ex.set(n=2).wait()
    assert len(shown) >= 3  # partial epochs, then the final figure
    assert shown[-1] == ex.cache[(2,)].html


def test_live_frames_carry_alt_text_and_caption_of_the_point_shown():
    ex = widgets.explore(labelled_fig, gain=[2, 10], kind=["a", "b"], mode="live",
                         labels={"gain": "gain G"}, alt="curve to {gain}")
    (alt, _), = frame_parts(ex._image_box.children[0].value)[0]
    assert alt == "Explorer at gain G = 2, kind = a: curve to 2"
    ex.set(gain=10, kind="b").wait()          # the worker thread's callback shows the new frame
    imgs, caption = frame_parts(ex._image_box.children[0].value)
    assert imgs[0][0] == "Explorer at gain G = 10, kind = b: curve to 10"
    assert caption == "Shown at gain G = 10, kind = b."
    shown = []

    def curves(n):
        for epoch in range(1, 4):
            yield labelled_fig(n * epoch, "a"), epoch / 3

    ex = widgets.explore(curves, n=[1, 2], mode="live")
    ex._image_box.observe(lambda ch: shown.append(ch["new"][0].value), names="children")
    ex.set(n=2).wait()
    alts = [frame_parts(f)[0][0][0] for f in shown]
    assert len(alts) >= 3 and all(a.startswith("Explorer at n = 2: G = ") for a in alts)
    assert alts[-1].startswith("Explorer at n = 2: G = 6:")   # the final frame, epoch 3


def test_live_failing_point_shows_message():
    ex = widgets.explore(lambda x: 1 / 0 if x else line_fig(1), x=[0, 1], mode="live")
    ex.set(x=1).wait()
    assert "ZeroDivisionError" in ex._image_box.children[0].value


def test_live_status_clears_when_an_uncomputed_point_is_abandoned_for_a_cached_one():
    # Seen in JupyterLab: "computing ..." and an empty bar stayed on screen forever after moving
    # from a point being computed back to a cached one (the abandoned worker kept writing).
    started = threading.Event()

    def slow(x, progress):
        if x == 2:
            started.set()
            for i in range(300):
                time.sleep(0.01)
                progress(i / 300)
        return line_fig(x)

    ex = widgets.explore(slow, x=[1, 2], mode="live")
    ex.set(x=2)
    assert started.wait(5)
    time.sleep(0.05)
    assert ex.status["text"].startswith("computing x=2")
    ex.set(x=1)                                     # back to the cached first point
    assert ex.status == {"text": "", "bar_visible": False, "bar": 0.0}
    ex.wait(timeout=5)
    time.sleep(0.05)                                # the worker's last chance to write
    assert ex.status == {"text": "", "bar_visible": False, "bar": 0.0}
    assert ex.cancelled == 1 and (2,) not in ex.cache
    assert ex._image_box.children[0].value == ex.cache[(1,)].html


def test_live_progress_bar_fills_with_reported_fractions_and_hides_after():
    seen = []

    def curves(n):
        for epoch in range(1, 5):
            time.sleep(0.02)
            yield line_fig(n * epoch), epoch / 4

    ex = widgets.explore(curves, n=[1, 2], mode="live")
    ex._bar.observe(lambda ch: seen.append((ch["new"], ex._bar.layout.visibility)), names="value")
    ex.set(n=2).wait()
    fractions = [v for v, vis in seen if v > 0]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, seen
    assert all(vis == "visible" for v, vis in seen if v > 0)
    assert ex.status == {"text": "", "bar_visible": False, "bar": 0.0}


def test_live_point_without_fractions_never_shows_an_empty_bar():
    visibility = []

    def steps(n):
        for _ in range(3):
            time.sleep(0.02)
            yield line_fig(n)                       # no fraction reported

    ex = widgets.explore(steps, n=[1, 2], mode="live")
    ex._bar.layout.observe(lambda ch: visibility.append(ch["new"]), names="visibility")
    ex.set(n=2).wait()
    assert "visible" not in visibility
    assert ex.status["text"] == ""


def test_live_controls_move_over_finer_values_than_the_page():
    live = {"g": [1, 2, 3, 5, 9]}
    static = widgets.explore(line_fig_g := (lambda g: line_fig(g)), g=[1, 5, 9], live=live,
                             mode="static")
    assert static.grid["g"] == [1, 5, 9] and len(static.cache) == 3
    ex = widgets.explore(line_fig_g, g=[1, 5, 9], live=live, mode="live", initial={"g": 5})
    assert ex.grid["g"] == [1, 2, 3, 5, 9] and ex.params == {"g": 5}
    ex.set(g=3).wait()
    assert (3,) in ex.cache


@pytest.mark.parametrize("values", [[1.0, 0.25], [4, 4, 8]])
def test_slider_values_must_increase_left_to_right(values):
    # ch03's ADC-range slider once ran backwards (1.0 on the left, 0.25 on the right).
    with pytest.raises(ValueError, match="increase from left to right"):
        widgets.explore(line_fig, gain=values, mode="static")
    with pytest.raises(ValueError, match="increase from left to right"):
        widgets.explore(line_fig, gain=[1, 2], live={"gain": values}, mode="live")
