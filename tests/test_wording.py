"""The book says what a number ran on, never how or where the book itself was made.

A measurement may name its hardware ("a 2-core x86 CPU", "one NVIDIA H200"); a sentence about
the circumstances of writing the book ("this machine", "a GPU lent to the project for a few
minutes", "this session") tells a reader nothing they can reproduce. Every page's text (markdown
cells, code cells, which print into the page, and the .md pages) is searched for such phrases.
"""
import json
import re

import pytest

from conftest import ROOT

PHRASES = {
    "lent / lend / loaned / on loan": r"\b(?:lent|lend(?:s|ing)?|loaned|on loan)\b",
    "borrowed": r"\bborrow(?:ed|ing)?\b",
    "this machine": r"\b(?:this|our) (?:\d+-core )?machines?\b",
    "few minutes": r"\bfew minutes\b",
    "this session": r"\b(?:this|our) session\b",
    "sandbox": r"\bsandbox(?:ed)?\b",
    "container / VM / runner": r"\b(?:this|our) (?:container|vm|virtual machine|runner|laptop|workstation)\b",
    "device / GPU budget or time": r"\b(?:device|accelerator) (?:budget|time|tool|access)\b|\bgpu (?:budget|access)\b",
    "to this project": r"\b(?:to|for) this project\b",
    "we were given": r"\bwe (?:were|got) (?:given|granted|assigned)\b",
}

# Pages that say such a thing today, each with what it says; strict: the mark must go when the
# page is fixed.
KNOWN = {
}


def page_text(path):
    if path.suffix == ".md":
        return [("page", path.read_text())]
    cells = json.loads(path.read_text())["cells"]
    return [(f"cell {i} ({c['cell_type']})", "".join(c["source"])) for i, c in enumerate(cells)]


def hits(path):
    found = []
    for where, text in page_text(path):
        for name, pattern in PHRASES.items():
            for m in re.finditer(pattern, text, re.IGNORECASE):
                line = text[max(0, m.start() - 60):m.end() + 60].replace("\n", " ")
                found.append(f"{where}: '{m.group(0)}' ({name}) in ...{line}...")
    return found


PAGES = sorted((ROOT / "book").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.md"))


@pytest.mark.parametrize("page", [
    pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=KNOWN[p.name]))
    if p.name in KNOWN else p for p in PAGES], ids=lambda p: p.name)
def test_no_page_says_how_or_where_the_book_was_made(page):
    found = hits(page)
    assert not found, f"{page.name} speaks about where the book was made:\n" + "\n".join(found)


@pytest.mark.parametrize("text, bad", [
    ("measured on one NVIDIA H200", False),
    ("the runs used a 2-core x86 CPU", False),
    ("an excellent, silent, equivalent result", False),
    ("the same machine learning model; GPU time per step", False),
    ("on this 2-core machine", True),
    ("a GPU lent to this project for a few minutes", True),
    ("in this session we ran", True),
])
def test_the_phrases_catch_what_they_should(text, bad):
    assert any(re.search(p, text, re.IGNORECASE) for p in PHRASES.values()) == bad
