"""The online edition: citation, bibliography links, notation page, the downloads the build
adds to each page (the data behind every explorer, the notebooks as executed), and each
explorer's static fallback (its first frame, with alt text and caption) in the web and print
editions.

Tests marked ``book`` read the built book (``make book``); the others need nothing built.
"""
import csv
import io
import json
import math
import re
import sys
import types

import pytest
import yaml

from conftest import ROOT

sys.path.insert(0, str(ROOT / "book" / "_ext"))
import explorer_data  # noqa: E402
import imckit_online  # noqa: E402

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
DOCS = [c["file"] for part in TOC["parts"] for c in part["chapters"]]
NOTEBOOKS = [d for d in DOCS if (ROOT / f"{d}.ipynb").exists()]


# --- citation -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cff():
    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def test_citation_cff_has_what_cff_1_2_requires(cff):
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title"):
        assert isinstance(cff[key], str) and cff[key].strip()
    assert cff["authors"], "CFF needs at least one author"
    for a in cff["authors"]:
        assert a.get("name") or a.get("family-names"), f"author {a} has no name"
    for ref in cff.get("references", []):
        assert {"type", "title", "authors"} <= set(ref)
        assert re.fullmatch(r"10\.\d{4,9}/[-._;()/:A-Za-z0-9]+", ref["doi"])


def test_citation_cff_agrees_with_the_config_and_the_package(cff):
    assert cff["repository-code"] == CONFIG["repository"]["url"]
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert cff["version"] == version
    assert cff["title"] == CONFIG["title"]


def test_the_paper_in_citation_cff_is_the_bibliography_entry(cff):
    bib = (ROOT / "book" / "references.bib").read_text()
    grimm = re.search(r"@article\{GRIMM22,(.*?)\n\}", bib, re.S)[1]
    assert f"doi     = {{{cff['references'][0]['doi']}}}" in grimm


def test_the_citation_refuses_a_second_repository_url(tmp_path):
    (tmp_path / "CITATION.cff").write_text("repository-code: https://example.org/other\n")
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://example.org/imckit\n")
    with pytest.raises(ValueError, match="repository-code"):
        imckit_online.citation(tmp_path)


def test_bibtex_of_the_book(cff):
    entry = imckit_online.bibtex(imckit_online.citation(ROOT), "2026")
    assert entry.startswith("@software{imckit,") and entry.endswith("}")
    assert "{{The imckit authors}}" in entry
    assert f"version = {{{cff['version']}}}" in entry
    assert f"url     = {{{CONFIG['repository']['url']}}}" in entry


# --- bibliography and notation ---------------------------------------------------------------

def bib_entries():
    text = (ROOT / "book" / "references.bib").read_text()
    return dict(re.findall(r"@\w+\{(\w+),(.*?)\n\}", text, re.S))


def test_every_bibliography_entry_has_a_doi_or_url_or_says_why_not():
    for key, body in bib_entries().items():
        has_doi = re.search(r"^\s*doi\s*=\s*\{10\.\d{4,9}/\S+\}", body, re.M)
        has_url = re.search(r"^\s*url\s*=\s*\{https://\S+\}", body, re.M)
        assert has_doi or has_url, f"{key}: no DOI and no URL"
        if not has_doi:
            assert re.search(r"^\s*note\s*=\s*\{.*(DOI|doi)", body, re.M), \
                f"{key}: no DOI and no note saying so"


def test_the_bibliography_and_the_package_cite_the_same_sources():
    from imckit.sources import SOURCES

    assert set(bib_entries()) == set(SOURCES)


def test_the_notation_page_is_in_the_book_and_states_the_three_mvms():
    assert "book/notation" in DOCS and "book/cite" in DOCS
    text = (ROOT / "book" / "notation.md").read_text()
    for form in (r"$Y = W X$", r"$\partial X = W^\top D$", r"$\partial W = D X^\top$"):
        assert form in text


# --- explorer data (kernel side) -------------------------------------------------------------

def test_figure_data_reads_what_a_figure_plots():
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure()
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.plot([1, 2, 3], [4, 5, np.nan], label="curve")
    ax1.axvline(2.5, color="k")
    ax1.scatter([0.5], [1.5], label="dot")
    ax1.errorbar([1, 2], [3, 4], yerr=[0.5, 1.0], fmt="o", label="err")
    ax1.set(title="t", xlabel="x", ylabel="y", yscale="log")
    ax2.barh(["adc", "thermal"], [30.0, 41.5])
    ax2.hist([1, 1, 2], bins=[0.5, 1.5, 2.5], label="h")
    ax2.text(0, 0, "note")
    ax3.imshow(np.arange(6).reshape(2, 3))
    a1, a2, a3 = explorer_data.figure_data(fig)
    kinds = {s["kind"]: s for s in a1["series"] if s["kind"] != "line"}
    curve = next(s for s in a1["series"] if s["label"] == "curve")
    assert curve["kind"] == "line" and curve["y"] == [4, 5, None]
    assert kinds["vline"]["x"] == [2.5, 2.5]
    assert kinds["points"]["x"] == [0.5] and kinds["points"]["label"] == "dot"
    assert kinds["errorbar"]["y_low"] == [2.5, 3.0] and kinds["errorbar"]["y_high"] == [3.5, 5.0]
    assert (a1["title"], a1["xlabel"], a1["yscale"]) == ("t", "x", "log")
    barh = next(s for s in a2["series"] if s["kind"] == "barh")
    assert barh["category"] == ["adc", "thermal"] and barh["x"] == [30, 41.5]
    hist = next(s for s in a2["series"] if s["kind"] == "bar")
    assert hist["x"] == [1, 2] and hist["y"] == [2, 1]
    assert a2["texts"] == ["note"]
    assert a3["series"][0]["values"] == [[0, 1, 2], [3, 4, 5]]


def small_explorer():
    import imckit as ik

    def point(gain, kind):
        fig, ax = ik.plots.figure(figsize=(2, 1.5))
        ax.plot([0, 1], [0, gain], label=kind)
        return fig, f"<b>gain</b> {gain}&times;"

    return ik.widgets.explore(point, gain=[1, 2], kind=["a", "b"], mode="static",
                              labels={"gain": "gain G"})


def test_an_explorer_saves_every_grid_point_as_data_and_csv(tmp_path):
    ex = small_explorer()
    data = explorer_data.explorer_data(ex)
    assert [c["label"] for c in data["controls"]] == ["gain G", "kind"]
    assert len(data["points"]) == 4
    p = next(p for p in data["points"] if p["params"] == {"gain": 2, "kind": "b"})
    line = p["figures"][0]["axes"][0]["series"][0]
    assert (line["label"], line["y"]) == ("b", [0, 2])
    assert p["text"] == ["gain 2×"]
    header, rows = explorer_data.csv_rows(data)
    assert header[:2] == ["gain", "kind"]
    assert len(rows) == 4 * (2 + 1)  # two plotted values and one text per point
    path = explorer_data.save(ex, tmp_path)
    assert path.name == f"{ex.widget.model_id}.json" and json.loads(path.read_text()) == data


def test_the_kernel_hook_saves_what_is_displayed_and_displays_it_unchanged(tmp_path, monkeypatch):
    from IPython.core.formatters import MimeBundleFormatter

    fmt = MimeBundleFormatter()
    ip = types.SimpleNamespace(display_formatter=types.SimpleNamespace(mimebundle_formatter=fmt))
    monkeypatch.setenv(explorer_data.ENV, str(tmp_path))
    explorer_data.install(ip)
    ex = small_explorer()
    bundle = fmt(ex)
    assert (bundle[0] if isinstance(bundle, tuple) else bundle) == ex._repr_mimebundle_()
    assert (tmp_path / f"{ex.widget.model_id}.json").exists()
    assert not (tmp_path / explorer_data.ERRORS).exists()


# --- explorer fallback (build side) ------------------------------------------------------------

def page_state(ex):
    """The explorer's widget models as the page embeds them (model id -> model)."""
    from ipywidgets.embed import dependency_state

    return dependency_state([ex.widget, *ex.links], drop_defaults=False)


def test_the_first_frame_is_found_down_the_stacks_of_the_page_state():
    import imckit as ik

    ex = ik.widgets.explore(lambda gain, kind: small_point(gain, kind), gain=[1, 2, 4],
                            kind=["a", "b"], initial={"gain": 2, "kind": "b"}, mode="static",
                            labels={"gain": "gain G"})
    frame = imckit_online.first_frame(page_state(ex), ex.widget.model_id)
    assert frame == ex.current().html
    assert 'alt="Explorer at gain G = 2, kind = b: ' in frame and "Shown at gain G = 2, kind = b." in frame
    assert imckit_online.first_frame(page_state(ex), "no-such-model") is None


def small_point(gain, kind):
    import imckit as ik

    fig, ax = ik.plots.figure(figsize=(2, 1.5))
    ax.plot([0, 1], [0, gain], label=kind)
    return fig, f"<b>gain</b> {gain}&times;"


def test_the_fallback_is_the_first_frame_with_its_images_as_files_next_to_the_page(tmp_path):
    ex = small_explorer()
    frame = ex.current().html
    data = explorer_data.explorer_data(ex)
    (tmp_path / "ch09").mkdir()
    out = imckit_online.fallback(frame, data, tmp_path / "ch09" / "explorer-2")
    assert out.startswith('<div class="imckit-explorer-fallback"><figure class="imckit-frame"')
    assert 'src="ch09/explorer-2.png" loading="lazy"' in out and "base64" not in out
    assert (tmp_path / "ch09" / "explorer-2.png").read_bytes() == ex.current().parts[0]
    alt = re.search(r'alt="([^"]*)"', out)[1]
    assert alt == re.search(r'alt="([^"]*)"', frame)[1] and alt.startswith("Explorer at gain G = 1")
    assert "Shown at gain G = 1, kind = a. With the page&#x27;s scripts running, its controls " \
           "move over gain G: 1, 2; kind: a, b.</figcaption>" in out
    printed = imckit_online.print_frame(data, frame).astext()
    assert printed.startswith('<div class="imckit-explorer-print"><figure class="imckit-frame"')
    assert "data:image/png;base64," in printed and f'alt="{alt}"' in printed
    assert "In the web edition the controls move over gain G: 1, 2; kind: a, b." in printed


def test_the_fallback_css_hides_it_once_rendered_and_shows_it_in_print():
    css = (ROOT / "book" / "_static" / "imckit-explorer.css").read_text()
    assert re.search(r"\.imckit-explorer:has\(> \.widget-subarea \.widget-vbox\) > "
                     r"\.imckit-explorer-fallback \{\s*display: none;", css)
    printed = css[css.index("@media print"):]
    assert ".imckit-explorer > .widget-subarea {\n    display: none;" in printed
    assert "imckit-explorer-fallback {\n    display: block !important;" in printed


def test_json_values_stay_json():
    assert explorer_data._num(float("nan")) is None and explorer_data._num(2.0) == 2
    assert math.isclose(explorer_data._num(0.1), 0.1)
    assert explorer_data.html_text("<table><tr><td>a</td><td>1 &lt; 2</td></tr></table>") == "a 1 < 2"


# --- the built book ----------------------------------------------------------------------------

def widget_views(html):
    return re.findall(r'<script type="application/vnd\.jupyter\.widget-view\+json">', html)


@pytest.mark.book
@pytest.mark.parametrize("chapter", NOTEBOOKS)
def test_every_explorer_has_its_data_next_to_the_page(built_book, chapter):
    html = (built_book / f"{chapter}.html").read_text()
    links = re.findall(r'<p class="imckit-explorer-data">Data behind this explorer: '
                       r'<a class="download reference external" href="([^"]+)\.csv">CSV</a>', html)
    assert len(links) == len(widget_views(html)), "an explorer on this page has no data link"
    for n, base in enumerate(links, 1):
        assert base == f"{chapter.split('/')[-1]}/explorer-{n}"
        data = json.loads((built_book / "book" / f"{base}.json").read_text())
        grid = math.prod(len(c["values"]) for c in data["controls"])
        assert len(data["points"]) == grid and data["explorer"] == n
        assert all(p.get("figures") or p.get("text") for p in data["points"])
        rows = list(csv.reader(io.StringIO((built_book / "book" / f"{base}.csv").read_text())))
        assert rows[0][:len(data["controls"])] == [c["name"] for c in data["controls"]]
        assert len(rows) > grid


def page_models(html):
    """The widget models the page embeds (its widget state)."""
    m = re.search(r'<script type="application/vnd\.jupyter\.widget-state\+json">(.*?)</script>',
                  html, re.S)
    return list(json.loads(m[1])["state"].values()) if m else []


def frames_in_state(html):
    """Every explorer frame the page's widget state holds (the HTML widgets' values)."""
    return [v["state"]["value"] for v in page_models(html) if v["model_name"] == "HTMLModel"
            and v["state"]["value"].startswith('<figure class="imckit-frame"')]


@pytest.mark.book
@pytest.mark.parametrize("chapter", NOTEBOOKS)
def test_every_explorer_frame_has_alt_text_and_each_explorer_a_fallback(built_book, chapter):
    html = (built_book / f"{chapter}.html").read_text()
    n = len(widget_views(html))
    frames = frames_in_state(html)
    grids = [math.prod(len(c["values"]) for c in json.loads(
        (built_book / "book" / chapter.split("/")[-1] / f"explorer-{i}.json").read_text())
        ["controls"]) for i in range(1, n + 1)]
    assert len(frames) == sum(grids), "a grid point is not a frame"
    assert "ImageModel" not in {v["model_name"] for v in page_models(html)}, "an image, no alt"
    for frame in frames:
        imgs = re.findall(r"<img [^>]*>", frame)
        assert imgs and all(re.search(r' alt="[^"]+ at [^"]+ = [^"]+"', i) for i in imgs), frame[-400:]
        assert re.search(r"<figcaption[^>]*>Shown at .+ = .+\.</figcaption>", frame)
    assert len(set(frames)) == len(frames)
    wrapped = re.findall(r'<div class="imckit-explorer"><script type="application/vnd\.jupyter'
                         r'\.widget-view\+json">.*?</script><div class="imckit-explorer-fallback">'
                         r'(<figure class="imckit-frame".*?</figure>)</div></div>', html, re.S)
    assert len(wrapped) == n, "an explorer has no static fallback"
    stem = chapter.split("/")[-1]
    for i, fallback in enumerate(wrapped, 1):
        assert f'src="{stem}/explorer-{i}.png" loading="lazy"' in fallback
        assert (built_book / "book" / stem / f"explorer-{i}.png").read_bytes()[:4] == b"\x89PNG"
        alt = re.search(r'alt="([^"]+)"', fallback)[1]
        assert any(f'alt="{alt}"' in f for f in frames), "the fallback is no frame of the explorer"


@pytest.mark.book
@pytest.mark.parametrize("chapter", NOTEBOOKS)
def test_the_notebook_download_has_the_outputs(built_book, chapter):
    html = (built_book / f"{chapter}.html").read_text()
    assert f'_sources/{chapter}.ipynb"' in html
    nb = json.loads((built_book / "_sources" / f"{chapter}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert any(c.get("outputs") for c in code), "the download has no outputs"
    assert "widgets" in nb["metadata"] or "explore(" not in json.dumps(nb["cells"])
    assert all(o.get("output_type") != "error" for c in code for o in c.get("outputs", []))


@pytest.mark.book
def test_the_built_book_can_be_cited(built_book, cff):
    assert (built_book / "CITATION.cff").read_text() == (ROOT / "CITATION.cff").read_text()
    page = (built_book / "book" / "cite.html").read_text()
    assert 'href="../CITATION.cff"' in page
    text = re.sub(r"<[^>]+>", "", page)  # the BibTeX is highlighted span by span
    assert "@software{imckit," in text and f"version = {{{cff['version']}}}" in text
    assert f"url     = {{{CONFIG['repository']['url']}}}" in text
    assert (built_book / "book" / "notation.html").exists()


# --- the print edition (`make print`) -----------------------------------------------------------

PRINT = ROOT / "_build" / "singlehtml" / "index.html"
PDF = ROOT / "_build" / "print" / "imckit.pdf"


@pytest.fixture(scope="module")
def print_edition():
    if not (PRINT.exists() and PDF.exists()):
        pytest.fail("the print edition is not built: run `make print` (`make test` builds it)")
    return PRINT.read_text()


@pytest.mark.book
def test_the_print_edition_has_every_page_and_each_explorer_as_a_frame(print_edition, built_book):
    for doc in DOCS[1:]:  # the root page opens the single page
        assert f'id="document-{doc}"' in print_edition, f"{doc} is missing from the print edition"
    assert not widget_views(print_edition), "an explorer is still a live widget in print"
    frames = re.findall(r'<div class="imckit-explorer-print"><figure class="imckit-frame"[^>]*>'
                        r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"', print_edition)
    captions = re.findall(r"<figcaption[^>]*>Shown at [^<]+ In the web edition the controls "
                          r"move over [^<]+</figcaption>", print_edition)
    assert len(captions) == len(frames)
    web = sum(len(widget_views((built_book / f"{d}.html").read_text())) for d in NOTEBOOKS)
    assert len(frames) == web and all(frames)
    assert 'src="_static/vendor/mathjax/tex-chtml.js' in print_edition  # offline, from the root


@pytest.mark.book
def test_the_pdf_is_a_whole_book(print_edition):
    pdf = PDF.read_bytes()
    assert pdf.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert pages >= 10 * len(NOTEBOOKS), f"only {pages} pages"


# --- internal links: every href inside the built book resolves (offline linkcheck) ---------

def broken_internal_links(root):
    """``(page, href, why)`` for every relative link of the HTML pages under ``root`` whose file
    does not exist or whose ``#anchor`` is no id/name on the target page (external links are
    not followed: the book must work offline, and they are checked against stored sources)."""
    import html as H
    import urllib.parse

    ids_of: dict = {}

    def ids(p):
        if p not in ids_of:
            t = p.read_text(errors="replace")
            ids_of[p] = set(re.findall(r'\sid="([^"]+)"', t)) | set(re.findall(r'\sname="([^"]+)"', t))
        return ids_of[p]

    bad, n = [], 0
    for page in sorted(root.rglob("*.html")):
        if {"_static", "reports"} & set(page.relative_to(root).parts):
            continue
        for href in re.findall(r'<a\s[^>]*href="([^"]*)"', page.read_text(errors="replace")):
            href = H.unescape(href)
            u = urllib.parse.urlsplit(href)
            if u.scheme or href.startswith("//"):
                continue
            n += 1
            target = page if not u.path else (page.parent / urllib.parse.unquote(u.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                bad.append((str(page.relative_to(root)), href, "no such file"))
            elif (u.fragment and target.suffix == ".html"
                  and urllib.parse.unquote(u.fragment) not in ids(target)):
                bad.append((str(page.relative_to(root)), href, "no such anchor"))
    return bad, n


def test_the_link_checker_finds_a_missing_page_and_a_missing_anchor(tmp_path):
    (tmp_path / "a.html").write_text('<a href="b.html#there">x</a> <a href="c.html">y</a> '
                                     '<a href="#top">z</a> <a href="https://example.org">w</a>'
                                     '<h1 id="top">A</h1>')
    (tmp_path / "b.html").write_text('<p id="here">B</p>')
    bad, n = broken_internal_links(tmp_path)
    assert n == 3 and sorted(w for _, _, w in bad) == ["no such anchor", "no such file"]


def test_no_internal_link_of_the_built_book_is_broken(built_book):
    bad, n = broken_internal_links(built_book)
    assert n > 500, n                                 # the chapters link to each other a lot
    assert not bad, bad[:20]
