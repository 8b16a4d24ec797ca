"""The built book: every chapter executed, no committed outputs, and pages alive offline.

The browser test opens each page in headless Chromium (Debian's package, driven by Playwright)
with every request that is not to the local test server blocked and recorded. It checks that the
math renders, that every explorer shows its controls, that moving each control changes the figure
a reader sees and its alt text and caption name the new setting, that the static fallback hides
once the explorers render and shows in print, and that nothing tried to leave the machine. With
the widget scripts blocked, each explorer still shows its first frame (the fallback).
"""
import contextlib
import functools
import http.server
import json
import pathlib
import re
import shutil
import threading

import pytest
import yaml

from conftest import ROOT

CHAPTERS = [c["file"] for part in yaml.safe_load((ROOT / "_toc.yml").read_text())["parts"]
            for c in part["chapters"]]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(nb):
    cells = json.loads(nb.read_text())["cells"]
    dirty = [i for i, c in enumerate(cells) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{nb.name}: cells {dirty} carry outputs; clear them before committing"


def test_every_notebook_is_in_the_table_of_contents():
    listed = {f"book/{nb.stem}" for nb in NOTEBOOKS}
    assert listed <= set(CHAPTERS), f"not in _toc.yml: {sorted(listed - set(CHAPTERS))}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_was_built_from_executed_cells(built_book, chapter):
    page = built_book / f"{chapter}.html"
    assert page.exists(), f"{page} missing: the book build did not produce this chapter"
    src = ROOT / f"{chapter}.ipynb"
    if src.exists():
        html = page.read_text()
        n_code = sum(c["cell_type"] == "code" for c in json.loads(src.read_text())["cells"])
        cells = re.findall(r'class="cell(?: tag_[\w-]+)* docutils container"', html)  # tagged too
        assert len(cells) >= n_code
        assert "output traceback" not in html and "Traceback (most recent call last)" not in html
        assert page.stat().st_mtime >= src.stat().st_mtime, "built page older than its notebook"


# --- the browser ------------------------------------------------------------------------------

@contextlib.contextmanager
def serve(root):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()


@pytest.fixture(scope="module")
def browser(built_book):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with serve(built_book) as base, sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b, base
        b.close()


PAGES_WITH_EXPLORERS = [c for c in CHAPTERS
                        if (ROOT / f"{c}.ipynb").exists()
                        and "widgets.explore" in (ROOT / f"{c}.ipynb").read_text()]


def _number(text):
    try:
        return float(text.strip())
    except ValueError:
        return None


def _visible_figures(page):
    """The images of the explorer frames a reader sees (the widget views), as (src, alt)."""
    return [(img.get_attribute("src"), img.get_attribute("alt"))
            for img in page.locator(".imckit-explorer > .widget-subarea .imckit-frame img:visible").all()]


def _shows(page, setting):
    """Some visible frame names ``setting`` ("label = value") in its alt text and caption."""
    alts = [alt for _, alt in _visible_figures(page)]
    captions = page.locator(".imckit-explorer > .widget-subarea .imckit-frame figcaption:visible")
    return (any(f" {setting}" in a for a in alts),
            any(setting in c for c in captions.all_inner_texts()))


@pytest.mark.browser
@pytest.mark.parametrize("chapter", PAGES_WITH_EXPLORERS)
def test_page_renders_offline_with_math_and_working_sliders(browser, built_book, chapter):
    b, base = browser
    page = b.new_page(viewport={"width": 1280, "height": 1000})
    left, failed = [], []
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base + "/")
               else (left.append(r.request.url), r.abort()))
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    shots = built_book.parent / "test-screenshots"
    try:
        page.goto(f"{base}/{chapter}.html")
        n_math = page.locator(".math").count()  # formulas MathJax must typeset
        if n_math:
            page.wait_for_selector("mjx-container", timeout=30_000)
            assert page.locator("mjx-container").count() >= n_math
        n_expected = (ROOT / f"{chapter}.ipynb").read_text().count("widgets.explore(")
        page.wait_for_function(
            f"document.querySelectorAll('.imckit-explorer > .widget-subarea .imckit-frame img')"
            f".length >= {n_expected}", timeout=30_000)
        assert page.locator(".MathJax_Error, mjx-merror").count() == 0, "a formula failed"
        boxes = page.locator(".widget-vbox:has(> .widget-slider), .widget-vbox:has(> .widget-toggle-buttons)")
        assert boxes.count() >= n_expected, "an explorer did not render its controls"
        assert page.locator(".imckit-explorer").count() == n_expected
        assert page.locator(".imckit-explorer-fallback:visible").count() == 0, \
            "the static fallback still shows beside a rendered explorer"
        assert all(alt and " at " in alt for _, alt in _visible_figures(page)), "a frame has no alt"
        moved = 0
        for slider in page.locator(".widget-slider:has(.noUi-handle)").all():
            handle, readout = slider.locator(".noUi-handle"), slider.locator(".widget-readout")
            label = slider.locator(".widget-label").inner_text().strip()
            handle.scroll_into_view_if_needed()
            before, shown = _visible_figures(page), _number(readout.inner_text())
            handle.focus()
            now = int(float(handle.get_attribute("aria-valuenow")))
            top = int(float(handle.get_attribute("aria-valuemax")))
            right = now != top
            page.keyboard.press("ArrowRight" if right else "ArrowLeft")
            page.wait_for_timeout(150)
            assert _visible_figures(page) != before, "a slider moved but the figure did not change"
            after = _number(readout.inner_text())
            if shown is not None and after is not None:       # values run low to high
                assert (after > shown) == right, f"slider runs backwards: {shown} -> {after}"
            setting = f"{label} = {readout.inner_text().strip()}"
            assert _shows(page, setting) == (True, True), f"no frame's alt/caption says {setting}"
            moved += 1
        for group in page.locator(".widget-toggle-buttons").all():
            buttons = group.locator("button")
            if buttons.count() < 2:
                continue
            before = _visible_figures(page)
            target = buttons.nth(1) if "mod-active" in (buttons.nth(0).get_attribute("class") or "") \
                else buttons.nth(0)
            target.scroll_into_view_if_needed()
            target.click()
            page.wait_for_timeout(150)
            assert _visible_figures(page) != before, "a button changed but the figure did not"
            label = group.locator(".widget-label").first.inner_text().strip()
            setting = f"{label} = {target.inner_text().strip()}"
            assert _shows(page, setting) == (True, True), f"no frame's alt/caption says {setting}"
            moved += 1
        assert moved > 0
        page.emulate_media(media="print")           # print: the first frame, not the widget
        assert page.locator(".imckit-explorer-fallback:visible").count() == n_expected
        assert page.locator(".imckit-explorer > .widget-subarea:visible").count() == 0
        page.emulate_media(media="screen")
        assert not left, f"requests tried to leave the machine: {left}"
        assert not failed, f"failed requests: {failed}"
    except Exception:
        shots.mkdir(exist_ok=True)
        page.screenshot(path=str(shots / f"{pathlib.Path(chapter).name}.png"), full_page=True)
        raise
    finally:
        page.close()


@pytest.mark.browser
@pytest.mark.parametrize("chapter", PAGES_WITH_EXPLORERS)
def test_without_widget_scripts_each_explorer_shows_its_first_frame(browser, built_book, chapter):
    """The widget manager's script fails to load (blocked here): each explorer's static fallback
    stays, its image loads and carries the alt text of the explorer's first frame."""
    b, base = browser
    page = b.new_page(viewport={"width": 1280, "height": 1000})
    blocked = []
    page.route("**/*", lambda r: (blocked.append(r.request.url), r.abort())
               if "/vendor/html-manager/" in r.request.url or not r.request.url.startswith(base + "/")
               else r.continue_())
    try:
        page.goto(f"{base}/{chapter}.html", wait_until="load")
        page.wait_for_timeout(1500)                 # time a working widget script would need
        assert blocked, "the widget script was not requested"
        assert page.locator(".imckit-explorer > .widget-subarea").count() == 0
        n_expected = (ROOT / f"{chapter}.ipynb").read_text().count("widgets.explore(")
        fallbacks = page.locator(".imckit-explorer-fallback")
        assert fallbacks.count() == n_expected
        for fallback in fallbacks.all():
            img = fallback.locator("img").first
            img.scroll_into_view_if_needed()
            assert fallback.is_visible()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle(),
                                   timeout=10_000)
            assert " at " in (img.get_attribute("alt") or ""), "the fallback image has no alt text"
            assert fallback.locator("figcaption").inner_text().startswith("Shown at ")
    except Exception:
        shots = built_book.parent / "test-screenshots"
        shots.mkdir(exist_ok=True)
        page.screenshot(path=str(shots / f"{pathlib.Path(chapter).name}-no-widgets.png"), full_page=True)
        raise
    finally:
        page.close()
