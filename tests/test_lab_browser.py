"""The lab editions in a real JupyterLab (with jupyterlab-myst), driven by headless Chromium.

JupyterLab is started on 127.0.0.1 over a fresh build of both editions (tools/make_labs.py), with
notebook windowing off so every cell is in the page. Checks: exercises render as exercises, the
instructor edition's solutions are collapsed, the student edition has none, and no raw MyST role
or directive is left in any rendered cell. A failing page leaves a screenshot in
_build/test-screenshots/.
"""
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("make_labs", ROOT / "tools" / "make_labs.py")
make_labs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_labs)

SHOTS = ROOT / "_build" / "test-screenshots"
RAW = ("{exercise}", "{solution}", "{literalinclude}", "{cite}", "{term}", "{doc}", ":label:",
       "{numref}", "{eq}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("labs")
    make_labs.build(root)
    settings = tmp_path_factory.mktemp("settings")
    for ext, values in {"notebook-extension/tracker": {"windowingMode": "none"},
                        "apputils-extension/notification": {"fetchNews": "false"}}.items():
        path = settings / "@jupyterlab" / f"{ext}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    jupyter = pathlib_bin("jupyter")
    proc = subprocess.Popen(
        [jupyter, "lab", "--no-browser", "--allow-root", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.expose_app_in_browser=True"],
        env={**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{base}/api/status", timeout=1)
                break
            time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def pathlib_bin(name):
    return str(os.path.join(os.path.dirname(sys.executable), name))


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        yield b
        b.close()


@contextlib.contextmanager
def opened(browser, url, shot):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(url)
        page.wait_for_selector(".jp-Notebook .jp-MarkdownCell .jp-RenderedMarkdown, "
                               ".jp-Notebook .jp-MarkdownCell .myst", timeout=60_000)
        page.wait_for_selector(".myst-exercise-title", timeout=60_000)
        yield page
    except Exception:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / shot), full_page=True)
        raise
    finally:
        page.close()


def rendered_text(page):
    """Text of every rendered markdown cell (the hidden editors hold the raw source)."""
    return "\n".join(page.locator(".jp-MarkdownCell .jp-Cell-inputArea > :not(.jp-Editor)")
                     .all_inner_texts())


@pytest.mark.browser
@pytest.mark.parametrize("chapter", ["ch01_why_imc", "ch05_training_live"])
def test_instructor_edition_renders_exercises_with_collapsed_solutions(lab, browser, chapter):
    with opened(browser, f"{lab}/lab/tree/instructor/{chapter}.ipynb?reset",
                f"lab-instructor-{chapter}.png") as page:
        titles = page.locator(".myst-exercise-title").all_inner_texts()
        assert any(t.startswith("Exercise") for t in titles), titles
        solutions = page.locator("details:has(.myst-exercise-title:text-matches('^Solution'))")
        assert solutions.count() >= 1
        assert all(d.get_attribute("open") is None for d in solutions.all()), "a solution is open"
        text = rendered_text(page)
        assert "Exercises" in text and "After this chapter you can" in text
        assert not [r for r in RAW if r in text], "raw MyST left in a rendered cell"


@pytest.mark.browser
def test_student_edition_renders_exercises_without_solutions(lab, browser):
    with opened(browser, f"{lab}/lab/tree/student/ch01_why_imc.ipynb?reset",
                "lab-student-ch01_why_imc.png") as page:
        titles = page.locator(".myst-exercise-title").all_inner_texts()
        assert any(t.startswith("Exercise") for t in titles)
        assert not any(t.startswith("Solution") for t in titles), titles
        text = rendered_text(page)
        assert "Exercises" in text and not [r for r in RAW if r in text]
        editors = page.locator(".jp-CodeCell .jp-Editor").all_inner_texts()
        assert any("G = ...   # your answer" in e for e in editors), "no blank answer cell"


@pytest.mark.browser
@pytest.mark.slow
def test_live_explorer_status_clears_when_its_point_is_abandoned(lab, browser):
    """Chapter 5 in JupyterLab with a kernel: move to a setting that is not stored (it trains
    live, with a filling progress bar), then back to a cached one: the status and the bar clear
    at once and stay clear (the abandoned computation once kept writing them)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{lab}/lab/tree/instructor/ch05_training_live.ipynb?reset")
        page.wait_for_selector(".myst-exercise-title", timeout=60_000)
        page.wait_for_function("window.jupyterapp !== undefined", timeout=30_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], "
                               ".jp-KernelStatus", timeout=60_000)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_selector(".imckit-check-right", timeout=240_000)   # the last cells ran
        status = page.locator("xpath=//*[starts-with(normalize-space(text()), 'computing ')]")
        bars = ("() => [...document.querySelectorAll('.jp-OutputArea [class*=progress]')]"
                ".map(e => getComputedStyle(e).visibility)")
        handle = page.locator(".widget-slider .noUi-handle").nth(1)     # cap mismatch
        handle.scroll_into_view_if_needed()
        assert float(handle.get_attribute("aria-valuenow")) == 1      # 0.002, stored
        assert "visible" not in page.evaluate(bars)
        handle.focus()
        page.keyboard.press("ArrowLeft")                                # 0.001: trains live
        status.first.wait_for(state="visible", timeout=30_000)
        page.wait_for_function(f"({bars})().includes('visible')", timeout=60_000)   # bar fills
        handle.focus()
        page.keyboard.press("ArrowRight")                               # back to the cached point
        page.wait_for_timeout(1000)
        assert status.count() == 0 or not status.first.is_visible()
        page.wait_for_timeout(3000)                                     # the worker's next epoch
        assert status.count() == 0 or not status.first.is_visible()
        assert "visible" not in page.evaluate(bars)
    except Exception:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "lab-live-ch05.png"), full_page=True)
        raise
    finally:
        page.close()
