"""The teaching labs: install cells from one URL, checked exercises, two editions from one source,
and a student chapter that runs alone from a wheel.

The slow test builds imckit's wheel, installs it (no dependencies) into a fresh virtual
environment that borrows this environment's installed packages (torch and the rest: no download,
no checkout on the path), copies one student chapter into an empty folder and runs it three times
in a fresh kernel: blank (every check says "not yet answered"), filled with the instructor's
answers (every check passes) and filled with wrong answers (every check fails).
"""
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

import nbformat
import pytest
import yaml

from conftest import ROOT
from imckit import exercises

spec = importlib.util.spec_from_file_location("make_labs", ROOT / "tools" / "make_labs.py")
make_labs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_labs)

CHAPTERS = sorted((ROOT / "book").glob("ch*.ipynb"))


def tagged(nb, tag):
    return [c for c in nb.cells if tag in c.metadata.get("tags", [])]


# --- one source ------------------------------------------------------------------------------

def test_every_install_cell_is_the_one_made_from_the_config_url():
    assert make_labs.sync(check=True) == [], "run `.venv/bin/python tools/make_labs.py --sync`"
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    src = make_labs.install_source()
    assert f"git+{url}@v" in src and "imckit[lab]" in src
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert make_labs.INSTALL_TAG in first.metadata.get("tags", []), path.name
        assert "find_spec(\"imckit\") is None" in first.source    # a no-op where imckit imports


def test_the_install_cell_follows_the_config(monkeypatch):
    monkeypatch.setattr(make_labs, "repository", lambda: ("https://example.org/me/imckit", "9.9"))
    assert "git+https://example.org/me/imckit@v9.9" in make_labs.install_source()


def test_every_checked_exercise_has_an_answer_cell_and_a_check_in_its_chapter():
    seen = []
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        answers = [c.metadata["imckit"]["exercise"] for c in tagged(nb, "answer")]
        checks = [c.metadata["imckit"]["exercise"] for c in tagged(nb, "check")]
        assert answers == checks, path.name
        for label in checks:
            cell = next(c for c in tagged(nb, "check") if c.metadata["imckit"]["exercise"] == label)
            assert cell.source == f'ik.exercises.check("{label}")'
            assert f":label: {label}" in "".join(c.source for c in nb.cells)
        seen += checks
    assert sorted(seen) == exercises.labels()
    assert len(seen) >= 15


def test_chapters_open_with_objectives_and_end_with_exercises():
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        head = nb.cells[0].source
        for needle in ("After this chapter you can", "Prerequisites", "Time:"):
            assert needle in head, f"{path.name}: no {needle!r} at the top"
        tail = "".join(c.source for c in nb.cells[-4:])
        assert "{exercise}" in tail or "{solution}" in tail or "exercises.check" in tail, path.name
        text = "".join(c.source for c in nb.cells)
        assert "## Exercises" in text and text.rindex("## Exercises") > text.rindex("## Summary")


# --- the checks ------------------------------------------------------------------------------

def test_a_check_says_unanswered_right_or_wrong():
    r = exercises.check("ex-why-1", {"G": ..., "max_one": 1.5})
    assert r.status == "unanswered" and r.missing == ["G"] and "not yet answered" in repr(r)
    assert r.hints and "amdahl_savings" in " ".join(r.hints)
    g = 2 / (3 / 2.9 - 1)
    assert exercises.check("ex-why-1", {"G": g, "max_one": 1.5}).status == "right"
    wrong = exercises.check("ex-why-1", {"G": 10.0, "max_one": 1.5})
    assert wrong.status == "wrong" and "Solve" in wrong._repr_html_()
    assert exercises.check("ex-why-1", {"G": "lots", "max_one": 1.5}).status == "wrong"


def test_expected_answers_are_computed_not_typed():
    # A check file holds no answer: it names the package call that computes it.
    for label in exercises.labels():
        src = exercises.check_file(label).read_text()
        body = src.split("OK_FORMAT")[1]
        assert "assert" in body and "ik." in body or "costs" in body, label


def test_unknown_labels_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="ex-why-1"):
        exercises.check("ex-nope-9", {})


# --- the editions ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def editions(tmp_path_factory):
    out = tmp_path_factory.mktemp("labs")
    return out, make_labs.build(out)


def test_make_labs_writes_both_editions_readable_without_sphinx(editions):
    out, written = editions
    assert [p.name for p in written["student"]] == [p.name for p in CHAPTERS]
    assert (out / "student" / "references.md").exists()
    refs = (out / "student" / "references.md").read_text()
    for name in ("student", "instructor"):
        for path in written[name]:
            text = "".join(c.source for c in nbformat.read(path, as_version=4).cells)
            for role in ("{literalinclude}", "{cite}", "{term}", "{doc}", "{numref}", "{eq}", "$$ ("):
                assert role not in text, f"{name}/{path.name} still has {role}"
            for key in re.findall(r"\(references\.md#([\w-]+)\)", text):
                assert f'<a id="{key}"></a>' in refs, f"{path.name}: citation {key} has no entry"


def test_student_edition_has_no_solutions_and_blank_answers(editions):
    _, written = editions
    for s, i in zip(written["student"], written["instructor"]):
        sn, inn = nbformat.read(s, as_version=4), nbformat.read(i, as_version=4)
        stext = "".join(c.source for c in sn.cells)
        assert "{solution}" not in stext
        assert "{solution}" in "".join(c.source for c in inn.cells)
        assert len(tagged(sn, "check")) == len(tagged(inn, "check"))
        for cell in tagged(sn, "answer"):
            names = exercises.answers(cell.metadata["imckit"]["exercise"])
            assert [ln.split(" = ")[0] for ln in cell.source.splitlines()
                    if " = ..." in ln] == names


def test_binder_installs_the_cpu_torch_then_imckit_with_the_lab_extra():
    req = (ROOT / "binder" / "requirements.txt").read_text()
    assert "whl/cpu" in req and re.search(r"^torch>=", req, re.M)
    post = ROOT / "binder" / "postBuild"
    assert os.access(post, os.X_OK) and '".[lab]"' in post.read_text()


def test_inlined_code_is_the_packages_own(editions):
    _, written = editions
    ch05 = next(p for p in written["instructor"] if p.name.startswith("ch05"))
    text = "".join(c.source for c in nbformat.read(ch05, as_version=4).cells)
    assert "def make_point(" in text and "imckit/train_grid.py" in text


# --- a student chapter alone, from a wheel -----------------------------------------------------

@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """A venv with imckit installed from its wheel only (dependencies borrowed, no checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # with setuptools at hand, build without fetching a build environment
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True, capture_output=True)
    (whl,) = (tmp / "dist").glob("imckit-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", str(whl)], check=True, capture_output=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    # borrow this environment's packages (torch ...) behind the wheel's imckit; a plain path in a
    # .pth file does not run that folder's own .pth files, so the editable checkout stays out
    (pathlib.Path(site.stdout.strip()) / "borrowed.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    return py


RUN = """
import json, sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
out = {"errors": [], "stderr": [], "checks": {}}
for c in nb.cells:
    for o in c.get("outputs", []):
        if o.output_type == "error":
            out["errors"].append(o.ename + ": " + o.evalue)
        if o.output_type == "stream" and o.name == "stderr":
            out["stderr"].append(o.text)
    if "check" in c.metadata.get("tags", []):
        out["checks"][c.metadata["imckit"]["exercise"]] = "".join(
            o.get("data", {}).get("text/plain", "") for o in c.outputs)
print(json.dumps(out))
"""


def run_alone(py, notebook, folder):
    folder.mkdir()
    target = folder / notebook.name
    shutil.copy(notebook, target)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "IMCKIT_BOOK_BUILD")}
    res = subprocess.run([str(py), "-c", RUN, target.name], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    import json
    return json.loads(res.stdout.strip().splitlines()[-1])


def fill(student, instructor, wrong=False):
    """The student notebook with every answer cell filled: the instructor's or wrong values."""
    nb = nbformat.read(student, as_version=4)
    right = {c.metadata["imckit"]["exercise"]: c.source
             for c in tagged(nbformat.read(instructor, as_version=4), "answer")}
    for cell in tagged(nb, "answer"):
        label = cell.metadata["imckit"]["exercise"]
        cell.source = ("\n".join(f"{n} = -12345" for n in exercises.answers(label)) if wrong
                       else right[label])
    return nb


@pytest.mark.notebook
@pytest.mark.slow
def test_a_student_chapter_runs_alone_from_the_wheel(wheel_venv, editions, tmp_path):
    out, _ = editions
    py = wheel_venv
    where = subprocess.run([str(py), "-c", "import imckit; print(imckit.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert str(py.parents[1]) in where, f"imckit not from the wheel: {where}"
    student, instructor = out / "student" / CHAPTERS[0].name, out / "instructor" / CHAPTERS[0].name
    blank = run_alone(py, student, tmp_path / "blank")
    assert not blank["errors"] and not blank["stderr"], blank
    assert blank["checks"] and all("not yet answered" in v for v in blank["checks"].values())

    for name, nb in (("right", fill(student, instructor)), ("wrong", fill(student, instructor,
                                                                             wrong=True))):
        path = tmp_path / f"{name}.ipynb"
        path.write_text(nbformat.writes(nb))
        res = run_alone(py, path, tmp_path / name)
        assert not res["errors"] and not res["stderr"], res
        verdict = ": right." if name == "right" else ": not right yet."
        assert all(verdict in v for v in res["checks"].values()), (name, res["checks"])


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("stem", ["ch05_training_live", "ch07_claims"])
def test_chapters_reading_stored_results_run_alone_from_the_wheel(wheel_venv, editions,
                                                                  tmp_path, stem):
    out, _ = editions
    res = run_alone(wheel_venv, out / "student" / f"{stem}.ipynb", tmp_path / stem)
    assert not res["errors"] and not res["stderr"], res
    assert all("not yet answered" in v for v in res["checks"].values())


def test_numbered_figures_and_equations_read_the_same_in_the_lab_editions(editions):
    # numbered through the book, as Sphinx numbers them (chapters in order, cells in order)
    _, written = editions
    n = 0
    for path in written["student"]:
        src = nbformat.read(ROOT / "book" / path.name, as_version=4)
        figs = [c.metadata["mystnb"]["figure"] for c in src.cells
                if "figure" in c.metadata.get("mystnb", {})]
        nb = nbformat.read(path, as_version=4)
        captions = [c.source for c in nb.cells if c.source.startswith("**Figure ")]
        assert len(captions) == len(figs), path.name
        numbers = range(n + 1, n + len(figs) + 1)
        for k, caption in zip(numbers, captions):
            assert caption.startswith(f"**Figure {k}.** ")
        text = "".join(c.source for c in nb.cells)
        for m in re.finditer(r"Figure (\d+)", text):
            assert int(m.group(1)) in numbers, f"{path.name}: Figure {m.group(1)}"
        n += len(figs)
    ch01 = next(p for p in written["instructor"] if p.name.startswith("ch01"))
    text = "".join(c.source for c in nbformat.read(ch01, as_version=4).cells)
    assert r"\qquad (1)" in text and "equation (1) gives" in text
