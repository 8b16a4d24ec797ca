"""Every chapter runs top to bottom in a fresh kernel, as a JupyterLab reader runs it (live mode).

The book build executes the chapters too, in its precomputing mode (IMCKIT_BOOK_BUILD=1); this
test covers the other path: explorers compute their first point at once and recompute on demand.
"""
import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("ch*.ipynb"))


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_runs_live_in_a_fresh_kernel(path, monkeypatch):
    monkeypatch.delenv("IMCKIT_BOOK_BUILD", raising=False)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"{path.name} wrote to stderr: {stderr[:2]}"
    # the chapters are the instructor edition: every answer cell is filled, every check passes
    for cell in (c for c in nb.cells if "check" in c.metadata.get("tags", [])):
        verdict = "".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs)
        assert ": right." in verdict, f"{path.name}: {verdict[:300]}"
    if "widgets.explore(" in path.read_text():
        views = [o for o in outputs if "application/vnd.jupyter.widget-view+json"
                 in o.get("data", {})]
        assert views, f"{path.name}: its explorer produced no widget"
