"""What the online edition adds to the built pages: explorer fallbacks, downloads, the citation.

* **Explorer fallback.** Each explorer on a web page is wrapped in ``<div class="imckit-explorer">``
  with a static copy of the frame it shows first (``<div class="imckit-explorer-fallback">``: the
  frame's images with their alt text and its caption, taken from the page's widget state, the
  images as ``explorer-<n>.png`` next to the page, loaded lazily). ``_static/imckit-explorer.css``
  hides the fallback once the widget view has rendered, and shows it instead of the widget in
  print: a reader whose widget script failed, or who prints the page, still sees the figure. The
  print edition (``singlehtml``) shows the same frame in place of each explorer.

* **Explorer data.** Each chapter kernel starts with :mod:`explorer_data` installed (an IPython
  startup file under ``_build/.ipython``), so every explorer a chapter displays leaves its
  precomputed grid, as plotted data, in ``_build/explorer_data/<model id>.json``. Below each
  explorer the page gets "Data behind this explorer: CSV, JSON", two files written next to the
  page (``book/<chapter>/explorer-<n>.csv`` and ``.json``).
* **Notebooks with outputs.** The page's ".ipynb" download (``_sources/<page>.ipynb``) is the
  notebook as the build executed it, outputs and widget state included, instead of the
  output-free source.
* **Citation.** The ``{imckit-citation}`` directive renders the citation from ``CITATION.cff``
  (the one place of the citation metadata, its URL checked against ``_config.yml``) as text and
  BibTeX, and the build publishes ``CITATION.cff`` at the site's root.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import yaml
from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

sys.path.insert(0, str(Path(__file__).parent))
import explorer_data  # noqa: E402  (the kernel-side half, also imported by the kernels)

logger = logging.getLogger(__name__)

FRAME_IMAGE = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
WIDGET_VIEW = re.compile(
    r'<script type="application/vnd\.jupyter\.widget-view\+json">(.*?)</script>', re.S)
STARTUP = """\
# Written by book/_ext/imckit_online.py for the book build's kernels: save explorer data.
import sys
sys.path.insert(0, {ext!r})
import explorer_data
explorer_data.install(get_ipython())
del sys, explorer_data
"""


def data_dir(app) -> Path:
    return Path(app.outdir).parent / "explorer_data"


def setup_kernels(app) -> None:
    """Make every kernel the build starts save the data of the explorers it displays."""
    ipython_dir = Path(app.outdir).parent / ".ipython"
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "50-imckit-explorer-data.py").write_text(
        STARTUP.format(ext=str(Path(__file__).parent.resolve())))
    folder = data_dir(app)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / explorer_data.ERRORS).unlink(missing_ok=True)
    os.environ["IPYTHONDIR"] = str(ipython_dir)
    os.environ[explorer_data.ENV] = str(folder)


def widget_models(app) -> dict:
    """Every widget model the pages embed (model id -> model), from myst-nb's per-page state."""
    models = getattr(app, "_imckit_widget_models", None)
    if models is None:
        from myst_nb.sphinx_ import NbMetadataCollector

        models = {}
        for doc, meta in NbMetadataCollector.get_doc_data(app.env).items():
            body = meta.get("js_files", {}).get("ipywidgets_state", (None, {}))[1].get("body")
            if body:
                models.update(json.loads(body)["state"])
        app._imckit_widget_models = models
    return models


def first_frame(models: dict, model_id: str) -> str | None:
    """The HTML of the frame an explorer shows first (an ``imckit.widgets`` frame): its panel,
    the explorer's last child, followed down the Stacks' selected children."""
    def child(ref: str) -> dict | None:
        return models.get(ref.removeprefix("IPY_MODEL_"))

    model = models.get(model_id)
    children = (model or {}).get("state", {}).get("children") or []
    model = child(children[-1]) if children else None
    while model is not None and model["model_name"] == "StackModel":
        state = model["state"]
        model = child(state["children"][state.get("selected_index") or 0])
    if model is None or model["model_name"] != "HTMLModel":
        return None
    return model["state"].get("value") or None


def with_note(frame: str, note: str) -> str:
    """A frame with one more sentence in its caption."""
    if "</figcaption>" in frame:
        return frame.replace("</figcaption>", f" {html.escape(note)}</figcaption>", 1)
    return f"{frame}<p>{html.escape(note)}</p>"


def moves_over(data: dict) -> str:
    return "; ".join(f"{c['label']}: {', '.join(map(str, c['values']))}" for c in data["controls"])


def fallback(frame: str, data: dict, stem: Path) -> str:
    """The static copy of an explorer's first frame, shown until the widget renders (and in
    print); its images become files next to the page, loaded only when the fallback shows."""
    names = []

    def to_file(m: re.Match) -> str:
        name = f"{stem.name}.png" if not names else f"{stem.name}-{len(names) + 1}.png"
        names.append(name)
        (stem.parent / name).write_bytes(base64.b64decode(m.group(1)))
        return f'src="{stem.parent.name}/{name}" loading="lazy"'

    frame = FRAME_IMAGE.sub(to_file, frame)
    note = f"With the page's scripts running, its controls move over {moves_over(data)}."
    return f'<div class="imckit-explorer-fallback">{with_note(frame, note)}</div>'


def explorer_links(app, doctree, docname) -> None:
    """Each explorer of a page: its static fallback, and links to its data, written next to the
    page (in the print edition: its first frame in place of the widget)."""
    if app.builder.format != "html":
        return
    folder = data_dir(app)
    n = 0
    for raw in list(doctree.findall(nodes.raw)):
        for content in WIDGET_VIEW.findall(raw.astext()):
            try:
                model_id = json.loads(content)["model_id"]
            except (ValueError, KeyError):
                continue
            src = folder / f"{model_id}.json"
            if not src.exists():
                continue  # a widget that is no explorer
            n += 1
            data = json.loads(src.read_text())
            frame = first_frame(widget_models(app), model_id)
            if frame is None:
                logger.warning("explorer %d has no first frame in the page's widget state: it "
                               "gets no static fallback", n, location=docname)
            if app.builder.name == "singlehtml":  # print: the first frame, no sliders
                raw.replace_self(print_frame(data, frame or ""))
                break
            data["page"] = docname
            data["explorer"] = n
            stem = Path(app.outdir) / docname / f"explorer-{n}"
            stem.parent.mkdir(parents=True, exist_ok=True)
            stem.with_suffix(".json").write_text(json.dumps(data))
            header, rows = explorer_data.csv_rows(data)
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
            stem.with_suffix(".csv").write_text(buf.getvalue())
            wrapped = nodes.raw("", '<div class="imckit-explorer">' + raw.astext()
                                + (fallback(frame, data, stem) if frame else "") + "</div>",
                                format="html")
            raw.replace_self(wrapped)
            base = f"{Path(docname).name}/explorer-{n}"
            para = nodes.paragraph(classes=["imckit-explorer-data"])
            para += nodes.Text("Data behind this explorer: ")
            para += nodes.reference("", "CSV", refuri=f"{base}.csv", classes=["download"])
            para += nodes.Text(", ")
            para += nodes.reference("", "JSON", refuri=f"{base}.json", classes=["download"])
            para += nodes.Text(" (every value of every control; the grid the sliders move over).")
            wrapped.parent.insert(wrapped.parent.index(wrapped) + 1, para)
            break  # one explorer per output


def print_frame(data: dict, frame: str) -> nodes.raw:
    """An explorer in the print edition: its first frame (images with alt text, a caption naming
    the setting shown) and the values its controls move over."""
    note = f"In the web edition the controls move over {moves_over(data)}."
    return nodes.raw("", f'<div class="imckit-explorer-print">{with_note(frame, note)}</div>',
                     format="html")


def publish(app, exception) -> None:
    """Executed notebooks as the pages' .ipynb downloads; CITATION.cff at the site's root."""
    if exception is not None or app.builder.format != "html":
        return
    errors = data_dir(app) / explorer_data.ERRORS
    if errors.exists():
        logger.warning("explorer data could not be saved: %s", errors.read_text().strip())
    out = Path(app.outdir)
    executed = Path(app.env.mystnb_config.output_folder)
    for docname in app.env.found_docs:
        nb = executed / f"{docname}.ipynb"
        target = out / "_sources" / f"{docname}.ipynb"
        if nb.exists() and target.exists():
            shutil.copyfile(nb, target)
    shutil.copyfile(Path(app.srcdir) / "CITATION.cff", out / "CITATION.cff")
    if app.builder.name == "singlehtml":
        # The single page links its assets from the site's root (_static/...), so it is read
        # there: index.html (otherwise a redirect to book/intro.html, where they do not resolve).
        shutil.copyfile(out / f"{app.config.root_doc}.html", out / "index.html")


def citation(srcdir: str | os.PathLike) -> dict:
    """CITATION.cff's fields, checked against the repository URL of _config.yml."""
    cff = yaml.safe_load((Path(srcdir) / "CITATION.cff").read_text())
    url = yaml.safe_load((Path(srcdir) / "_config.yml").read_text())["repository"]["url"]
    if cff.get("repository-code") != url:
        raise ValueError(f"CITATION.cff repository-code={cff.get('repository-code')!r} is not "
                         f"_config.yml's repository.url={url!r}: make them equal")
    return cff


def bibtex(cff: dict, year: str) -> str:
    authors = " and ".join(
        f"{{{a['name']}}}" if "name" in a else f"{a['family-names']}, {a['given-names']}"
        for a in cff["authors"])
    fields = {"author": authors, "title": cff["title"], "year": year,
              "version": cff["version"], "url": cff["repository-code"],
              "license": cff.get("license", "")}
    body = ",\n".join(f"  {k:<7} = {{{v}}}" for k, v in fields.items() if v)
    return f"@software{{imckit,\n{body},\n}}"


class CitationDirective(SphinxDirective):
    """The book's citation, from CITATION.cff: a sentence and a BibTeX entry."""

    has_content = False

    def run(self):
        src = Path(self.env.srcdir)
        self.env.note_dependency(str(src / "CITATION.cff"))
        cff = citation(src)
        year = str(self.config.copyright).split(",")[0].strip()[:4]
        names = ", ".join(a.get("name") or f"{a['given-names']} {a['family-names']}"
                          for a in cff["authors"])
        para = nodes.paragraph()
        para += nodes.Text(f"{names} ({year}). ")
        para += nodes.emphasis(text=cff["title"])
        para += nodes.Text(f". Version {cff['version']}. ")
        para += nodes.reference("", cff["repository-code"], refuri=cff["repository-code"])
        block = nodes.literal_block(text=bibtex(cff, year), language="bibtex")
        up = "../" * self.env.docname.count("/")
        dl = nodes.paragraph()
        dl += nodes.Text("The same as a Citation File Format file: ")
        dl += nodes.reference("", "CITATION.cff", refuri=f"{up}CITATION.cff")
        dl += nodes.Text(" (reference managers and GitHub's \"Cite this repository\" read it).")
        return [para, block, dl]


def singlehtml_handlers(app) -> None:
    """The single-page (print) edition renders every node the web pages render.

    Sphinx looks up a builder's node handlers by its name before its format: once an extension
    registers any handler for "singlehtml", the "html" ones (sphinx-jupyterbook-latex's hidden
    cells among them) are no longer found there, and the build stops on an unknown node.
    """
    if app.builder.name != "singlehtml":
        return
    handlers = app.registry.translation_handlers
    for node, pair in handlers.get("html", {}).items():
        handlers.setdefault("singlehtml", {}).setdefault(node, pair)


def setup(app):
    setup_kernels(app)
    app.connect("builder-inited", singlehtml_handlers)
    app.add_directive("imckit-citation", CitationDirective)
    app.add_css_file("imckit-explorer.css")  # book/_static: fallback until rendered, and in print
    app.connect("doctree-resolved", explorer_links)
    app.connect("build-finished", publish)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
