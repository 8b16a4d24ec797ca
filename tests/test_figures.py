"""The chapters as a reader navigates them: numbered figures with captions and alt text, labelled
equations, and links where the text names a chapter.

A static figure is a code cell whose metadata names it (``mystnb.figure``: ``name``, ``caption``)
and describes it (``mystnb.image.alt``); MyST-NB wraps its output in a numbered figure. Tests
marked ``book`` read the built book (``make book``); the others read the notebooks.
"""
import json
import re

import pytest

from conftest import ROOT

CHAPTERS = sorted((ROOT / "book").glob("ch*.ipynb"))
EQ_LABEL = re.compile(r"^\$\$ \(([\w-]+)\)[ \t]*$", re.M)

# Chapters whose text still names chapters without linking them; strict: the mark must go when
# the chapter is fixed.
KNOWN: dict[str, str] = {}   # chapter file -> why its chapter names are not links yet


def cells(path):
    return json.loads(path.read_text())["cells"]


def markdown(path):
    return "\n".join("".join(c["source"]) for c in cells(path) if c["cell_type"] == "markdown")


def figures(path):
    return [(c, c["metadata"]["mystnb"]) for c in cells(path)
            if c["cell_type"] == "code" and "figure" in c["metadata"].get("mystnb", {})]


def all_labels():
    figs = {f["figure"]["name"] for p in CHAPTERS for _, f in figures(p)}
    eqs = [m for p in CHAPTERS for m in EQ_LABEL.findall(markdown(p))]
    return figs, eqs


def test_every_figure_has_a_name_a_caption_and_alt_text():
    names = []
    for path in CHAPTERS:
        for cell, opts in figures(path):
            name = opts["figure"].get("name", "")
            assert re.fullmatch(r"fig-[a-z0-9-]+", name), f"{path.name}: figure name {name!r}"
            assert len(opts["figure"].get("caption", "")) > 40, f"{name}: no caption"
            assert len(opts.get("image", {}).get("alt", "")) > 40, f"{name}: no alt text"
            assert "".join(cell["source"]).rstrip().endswith(("fig", ")")), \
                f"{name}: the cell must end by showing its figure"
            names.append(name)
    assert len(names) == len(set(names)), "two figures share a name"
    assert len(names) >= 11


def test_every_numref_and_eq_points_at_a_figure_or_equation_that_exists():
    figs, eqs = all_labels()
    assert len(eqs) == len(set(eqs)), "two equations share a label"
    for path in CHAPTERS:
        text = markdown(path) + "".join(f["figure"]["caption"] for _, f in figures(path))
        for ref in re.findall(r"\{numref\}`(?:[^`<]*<)?([\w-]+)>?`", text):
            assert ref in figs, f"{path.name}: {{numref}} to unknown figure {ref}"
        for ref in re.findall(r"\{eq\}`([\w-]+)`", text):
            assert ref in eqs, f"{path.name}: {{eq}} to unknown equation {ref}"


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=KNOWN[p.name]))
    if p.name in KNOWN else p for p in CHAPTERS], ids=lambda p: p.name)
def test_a_chapter_named_in_the_text_is_a_link(path):
    text = re.sub(r"\{doc\}`[^`]*`", "", markdown(path))
    plain = re.findall(r".{0,30}\b[Cc]hapters? \d.{0,20}", text)
    assert not plain, f"{path.name}: link these with {{doc}}: {plain}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_a_chapter_links_the_glossary_terms_it_uses(path):
    """Issue 16: glossary terms are linked on first use in each chapter. Every term the chapter
    links must exist in the glossary, and a chapter that uses a term in its text links it."""
    glossary = (path.parent / "glossary.md").read_text()
    terms = set(re.findall(r"^(\S[^\n]*)\n  ", glossary.split("```{glossary}")[1], re.M))
    text = markdown(path)
    linked = {" ".join(m.split("<")[-1].rstrip(">").split())
              for m in re.findall(r"\{term\}`([^`]*)`", text)}
    assert linked <= terms, f"{path.name}: unknown glossary terms {linked - terms}"
    plain = re.sub(r"```[\s\S]*?```|`[^`]*`|\{[a-z]+\}`[^`]*`", "", text)
    used = {t for t in terms if re.search(r"(?<![\w-])" + re.escape(t) + r"(?![\w-])", plain)}
    assert used <= linked | {"IMC"} or not used, f"{path.name}: used but never linked: {used - linked}"


# --- the built book ----------------------------------------------------------------------------

@pytest.mark.book
@pytest.mark.parametrize("path", [p for p in CHAPTERS if figures(p)], ids=lambda p: p.name)
def test_built_figures_are_numbered_with_caption_and_alt(built_book, path):
    # Jupyter Book numbers figures through the book: those of the chapters before come first
    html = (built_book / "book" / f"{path.stem}.html").read_text()
    before = sum(len(figures(p)) for p in CHAPTERS[:CHAPTERS.index(path)])
    for n, (_, opts) in enumerate(figures(path), before + 1):
        name = opts["figure"]["name"]
        m = re.search(rf'<figure class="[^"]*" id="{name}">(.*?)</figure>', html, re.S)
        assert m, f"{name}: no figure in the page"
        alt = re.search(r'<img alt="([^"]+)"', m.group(1))
        assert alt and alt.group(1).startswith(opts["image"]["alt"][:30]), f"{name}: alt text"
        assert re.search(rf'<span class="caption-number">Fig\. {n} </span>', m.group(1)), \
            f"{name}: not numbered {n}"
    for label in EQ_LABEL.findall(markdown(path)):
        assert f'id="equation-{label}"' in html, f"{label}: not a numbered equation"
