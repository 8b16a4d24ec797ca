"""The teaching labs: the chapters' install cell, and a student and an instructor edition of each.

One source, two editions. The chapters in ``book/`` are the instructor edition as the book shows
it; this script writes, for JupyterLab (where jupyterlab-myst renders MyST but not everything
Sphinx does):

* ``_build/labs/instructor/``: every chapter with its solutions (collapsed dropdowns) and its
  answer cells filled in;
* ``_build/labs/student/``: the same chapters with every ``{solution}`` block removed and every
  answer cell (tag ``answer``) replaced by blanks (``name = ...``); the checks (tag ``check``)
  stay, and say "not yet answered" until the student fills the blanks.

In both editions what jupyterlab-myst cannot render is rewritten to something readable:
``{literalinclude}`` with ``:pyobject:`` (or a whole file) is inlined as a code block, taken from
the files at build time; ``{cite}`KEY``` becomes a link to ``references.md`` (written beside the
chapters from ``book/references.bib``); ``{term}`` and ``{doc}`` become plain names (a ``{doc}``
a link to the chapter's notebook). Numbered figures (a code cell's ``mystnb.figure`` metadata: name and
caption) get their caption as a markdown cell below the cell, "**Figure N.** ..."; a labelled
equation (``$$ ... $$ (label)``) gets its number written beside it, and ``{numref}`` / ``{eq}``
references become "Figure N" / "(N)", numbered as the book numbers them (in order through the
chapters of _toc.yml).

``--sync`` (re)writes each chapter's first code cell, the install cell, from the ONE place the
repository URL lives, ``_config.yml`` (``repository.url``), and the version in ``pyproject.toml``;
``--check`` fails when a chapter's install cell differs from what ``--sync`` would write.

Usage::

    .venv/bin/python tools/make_labs.py            # both editions -> _build/labs/
    .venv/bin/python tools/make_labs.py --sync     # rewrite the install cells in book/
    .venv/bin/python tools/make_labs.py --check    # exit 1 if an install cell is stale
"""
from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
OUT = ROOT / "_build" / "labs"
INSTALL_TAG = "imckit-install"
EXTRA = "lab"        # the extra a bare runtime needs to run the chapters (pyproject.toml)


# --- the install cell ------------------------------------------------------------------------

def repository() -> tuple[str, str]:
    """``(url, version)``: ``repository.url`` of _config.yml and the package version."""
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    text = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)
    return url, version


def install_source() -> str:
    """The source of every chapter's install cell (a no-op wherever imckit imports)."""
    url, version = repository()
    spec = f"imckit[{EXTRA}] @ git+{url}@v{version}"
    return (
        "# Colab or a bare Jupyter: install imckit (this cell does nothing where it imports).\n"
        "import importlib.util, subprocess, sys\n"
        "if importlib.util.find_spec(\"imckit\") is None:\n"
        f"    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\", \"{spec}\"],\n"
        "                   check=True)")


def _install_cell():
    cell = nbformat.v4.new_code_cell(install_source())
    cell.metadata["tags"] = [INSTALL_TAG, "hide-input"]
    return cell


def chapters() -> list[Path]:
    return sorted(BOOK.glob("ch*.ipynb"))


def sync(check: bool = False) -> list[str]:
    """Put the install cell before each chapter's first code cell; return the stale chapters."""
    stale = []
    want = install_source()
    for path in chapters():
        nb = nbformat.read(path, as_version=4)
        tagged = [i for i, c in enumerate(nb.cells) if INSTALL_TAG in c.metadata.get("tags", [])]
        first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
        if tagged == [first_code] and nb.cells[first_code].source == want:
            continue
        stale.append(path.name)
        if check:
            continue
        if tagged:
            for i in reversed(tagged):
                del nb.cells[i]
            first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
        nb.cells.insert(first_code, _install_cell())
        path.write_text(nbformat.writes(nb) + "\n")
    return stale


# --- MyST that JupyterLab cannot render --------------------------------------------------------

_INCLUDE = re.compile(r"^```\{literalinclude\}\s+(\S+)\n((?::[\w-]+:.*\n)*)```", re.M)


def _pyobject(source: str, name: str) -> str:
    """The source of a top-level function or class (or ``Class.method``) of a module."""
    tree = ast.parse(source)
    nodes = tree.body
    node = None
    for part in name.split("."):
        node = next((n for n in nodes if isinstance(n, (ast.FunctionDef, ast.ClassDef,
                                                         ast.AsyncFunctionDef))
                     and n.name == part), None)
        if node is None:
            raise ValueError(f"literalinclude :pyobject: {name} not found")
        nodes = node.body
    lines = source.splitlines()
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    return "\n".join(lines[start:node.end_lineno])


def inline_includes(text: str, base: Path) -> str:
    """``{literalinclude}`` blocks as code blocks holding what they include."""
    def one(m):
        path = (base / m.group(1)).resolve()
        opts = dict(re.findall(r"^:([\w-]+):\s*(.*)$", m.group(2), re.M))
        src = path.read_text()
        if "pyobject" in opts:
            try:
                src = _pyobject(src, opts["pyobject"].strip())
            except ValueError as exc:
                raise ValueError(f"{m.group(1)}: {exc}") from None
        if "lines" in opts:
            a, _, b = opts["lines"].partition("-")
            src = "\n".join(src.splitlines()[int(a) - 1:int(b) if b else None])
        lang = opts.get("language", "python" if path.suffix == ".py" else "").strip()
        rel = path.relative_to(ROOT).as_posix()
        what = f"`{opts['pyobject'].strip()}` in " if "pyobject" in opts else ""
        return f"From {what}`{rel}`:\n\n```{lang}\n{src.rstrip()}\n```"
    return _INCLUDE.sub(one, text)


def _chapter_titles() -> dict[str, str]:
    titles = {}
    for path in chapters():
        nb = nbformat.read(path, as_version=4)
        first = nb.cells[0].source.splitlines()[0]
        titles[path.stem] = first.lstrip("# ").strip()
    return titles


def plain_roles(text: str, titles: dict[str, str]) -> str:
    """{cite} -> links to references.md, {term} -> the term, {doc} -> a link to the notebook."""
    def cite(m):
        keys = [k.strip() for k in m.group(1).split(",")]
        return "[" + ", ".join(f"[{k}](references.md#{k.lower()})" for k in keys) + "]"

    def doc(m):
        body = m.group(1)
        label, target = (re.match(r"(.*)<(.*)>", body).groups() if "<" in body
                         else (None, body))
        stem = Path(target.strip()).name
        return f"[{(label or titles.get(stem, stem)).strip()}]({stem}.ipynb)"

    def term(m):
        body = m.group(1)
        return re.sub(r"\s*<.*>$", "", body) if "<" in body else body

    text = re.sub(r"\{cite(?::\w+)?\}`([^`]+)`", cite, text)
    text = re.sub(r"\{doc\}`([^`]+)`", doc, text)
    return re.sub(r"\{term\}`([^`]+)`", term, text)


# --- numbered figures and equations -------------------------------------------------------------

_EQ_BLOCK = re.compile(r"^\$\$[ \t]*\n((?:(?!\$\$).*\n)+?)\$\$ \(([\w-]+)\)[ \t]*$", re.M)


def figure_options(cell) -> dict:
    """A code cell's figure options (``mystnb.figure``: name, caption), or {}."""
    return cell.metadata.get("mystnb", {}).get("figure", {}) if cell.cell_type == "code" else {}


def numbers() -> tuple[dict[str, int], dict[str, int]]:
    """``(figures, equations)``: ``{label: number}``, numbered through the book as Sphinx does,
    in the order of the chapters in _toc.yml and of the cells in each."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    figs, eqs = [], []
    for part in toc["parts"]:
        for entry in part["chapters"]:
            path = ROOT / f"{entry['file']}.ipynb"
            if not path.exists():
                continue
            nb = nbformat.read(path, as_version=4)
            figs += [figure_options(c)["name"] for c in nb.cells if figure_options(c).get("name")]
            eqs += [m.group(2) for c in nb.cells if c.cell_type == "markdown"
                    for m in _EQ_BLOCK.finditer(c.source)]
    return {n: i for i, n in enumerate(figs, 1)}, {n: i for i, n in enumerate(eqs, 1)}


def plain_numbers(text: str, figs: dict[str, int], eqs: dict[str, int]) -> str:
    """Labelled equations carry their number; {numref} and {eq} become "Figure N" and "(N)"."""
    def numref(m):
        body = m.group(1)
        label, target = (re.match(r"(.*)<(.*)>", body).groups() if "<" in body
                         else ("Figure %s", body))
        return label.strip().replace("%s", str(figs[target.strip()]))

    text = _EQ_BLOCK.sub(lambda m: f"$$\n{m.group(1).rstrip()} \\qquad ({eqs[m.group(2)]})\n$$",
                         text)
    text = re.sub(r"\{numref\}`([^`]+)`", numref, text)
    return re.sub(r"\{eq\}`([^`]+)`", lambda m: f"({eqs[m.group(1).strip()]})", text)


_SOLUTION = re.compile(r"^(`{3,}|:{3,})\{solution\}.*?^\1[ \t]*$\n?", re.M | re.S)


def strip_solutions(text: str) -> str:
    return _SOLUTION.sub("", text)


def blank_answer(cell) -> str:
    """The student's version of an answer cell: its first comment line and ``name = ...``."""
    sys.path.insert(0, str(ROOT))
    from imckit import exercises

    label = cell.metadata["imckit"]["exercise"]
    head = [ln for ln in cell.source.splitlines()[:1] if ln.startswith("#")]
    return "\n".join(head + [f"{name} = ...   # your answer" for name in
                             exercises.answers(label)])


# --- references.md -------------------------------------------------------------------------------

def _bib_entries(text: str) -> dict[str, dict[str, str]]:
    """``{key: {field: value}}`` of a BibTeX file (braced values; enough for references.bib)."""
    entries = {}
    for m in re.finditer(r"@\w+\s*\{\s*([^,\s]+)\s*,", text):
        i, depth, fields = m.end(), 1, {}
        body_start = i
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[body_start:i - 1]
        for f in re.finditer(r"(\w+)\s*=\s*\{", body):
            j, d = f.end(), 1
            while d and j < len(body):
                d += {"{": 1, "}": -1}.get(body[j], 0)
                j += 1
            fields[f.group(1).lower()] = re.sub(r"[{}]", "", body[f.end():j - 1]).strip()
        entries[m.group(1)] = fields
    return entries


def references_md() -> str:
    """The bibliography as a Markdown page (one anchor per key) for the lab editions."""
    lines = ["# References", "",
             "The works the chapters cite, by key (the book's bibliography page has the same).", ""]
    bib = _bib_entries((BOOK / "references.bib").read_text())
    for key in sorted(bib):
        f = bib[key]
        names = [n.strip() for n in f.get("author", "").split(" and ") if n.strip()]
        authors = "; ".join(names[:3]) + (" et al" if len(names) > 3 else "")
        where = f.get("journal") or f.get("booktitle") or f.get("publisher") \
            or f.get("howpublished", "")
        parts = [authors, f.get("title", ""), f"*{where}*" if where else "", f.get("year", "")]
        link = f" <{f['url']}>" if "url" in f else (f" doi:{f['doi']}" if "doi" in f else "")
        lines.append(f'<a id="{key.lower()}"></a>**[{key}]** '
                     + ". ".join(p.rstrip(".") for p in parts if p) + "." + link + "\n")
    return "\n".join(lines) + "\n"


# --- the editions ------------------------------------------------------------------------------

def edition(path: Path, student: bool, titles: dict[str, str],
            numbered: tuple[dict[str, int], dict[str, int]] | None = None):
    """One chapter as the ``student`` or the instructor lab edition (a notebook object).

    ``numbered``: :func:`numbers`, the book's figure and equation numbers (computed if None).
    """
    nb = nbformat.read(path, as_version=4)
    figs, eqs = numbered or numbers()

    def plain(text):
        return plain_roles(plain_numbers(inline_includes(text, path.parent), figs, eqs), titles)

    cells = []
    for cell in nb.cells:
        cell = copy.deepcopy(cell)
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "markdown":
            text = plain(cell.source)
            if student:
                text = strip_solutions(text)
                if not text.strip():
                    continue
            cell.source = text
        elif student and "answer" in tags:
            cell.source = blank_answer(cell)
            cell.metadata["tags"] = [t for t in tags if t != "hide-input"]
        cells.append(cell)
        fig = figure_options(cell)
        if fig.get("caption"):      # jupyterlab-myst ignores mystnb metadata: caption below
            cells.append(nbformat.v4.new_markdown_cell(
                f"**Figure {figs[fig['name']]}.** " + plain(fig["caption"])))
    nb.cells = cells
    nb.metadata["imckit"] = {"edition": "student" if student else "instructor",
                             "source": f"book/{path.name}"}
    return nb


def build(out: Path = OUT) -> dict[str, list[Path]]:
    """Write both editions of every chapter (and references.md) under ``out``."""
    titles = _chapter_titles()
    refs = references_md()
    numbered = numbers()
    written: dict[str, list[Path]] = {}
    for name, student in (("instructor", False), ("student", True)):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "references.md").write_text(refs)
        written[name] = []
        for path in chapters():
            target = folder / path.name
            target.write_text(nbformat.writes(edition(path, student, titles, numbered))
                              + "\n")
            written[name].append(target)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sync", action="store_true", help="rewrite the install cells in book/")
    ap.add_argument("--check", action="store_true", help="fail if an install cell is stale")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    if args.check or args.sync:
        stale = sync(check=args.check)
        verb = "stale" if args.check else "rewritten"
        print(f"install cells {verb}: {', '.join(stale) or 'none'}")
        return 1 if (args.check and stale) else 0
    written = build(Path(args.out))
    for name, paths in written.items():
        print(f"{name:>10}: {len(paths)} chapters in {Path(args.out) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
