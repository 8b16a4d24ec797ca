"""The publishing workflow (.github/workflows/book.yml) and the Makefile's apt-get steps.

actionlint (from the dev extra) checks the workflow's syntax, expressions, action inputs and
permissions; the rest checks what this project needs of it: the README's test command, the built
book as the Pages artifact, write permissions only where Pages is deployed, and no second copy of
the repository URL (its one place is _config.yml).
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def actionlint() -> str:
    here = pathlib.Path(sys.executable).parent / "actionlint"
    found = str(here) if here.exists() else shutil.which("actionlint")
    if found is None:
        pytest.fail("actionlint is missing: it comes with the dev extra (requirements/lock.txt)")
    return found


@pytest.fixture(scope="module")
def workflow():
    # PyYAML reads the key `on` as True (YAML 1.1); take it back under its name.
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def test_actionlint_finds_nothing():
    out = subprocess.run([actionlint(), "-no-color", str(WORKFLOW)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, f"actionlint:\n{out.stdout}{out.stderr}"


def test_the_workflow_runs_make_test_and_uploads_the_built_book(workflow):
    steps = workflow["jobs"]["test"]["steps"]
    assert any(s.get("run", "").strip() == "make test" for s in steps)
    upload = [s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert upload and upload[0]["with"]["path"] == "_build/html"


def test_only_the_deploy_job_may_write_and_it_publishes_main_only(workflow):
    assert workflow["permissions"] == {"contents": "read"}
    deploy = workflow["jobs"]["deploy"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["needs"] == "test"
    assert "refs/heads/main" in deploy["if"] and "pull_request" in deploy["if"]
    assert deploy["environment"]["name"] == "github-pages"
    assert deploy["concurrency"]["cancel-in-progress"] is False
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])
    for name, job in workflow["jobs"].items():
        if name != "deploy":
            assert "permissions" not in job, f"job {name} widens the token's permissions"


def test_the_repository_url_lives_only_in_config():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert url.split("://")[-1] not in WORKFLOW.read_text()


def fake_bin(tmp_path, uid):
    """A PATH entry whose `id -u` answers uid and that has a sudo (a no-op)."""
    bin_ = tmp_path / f"bin{uid}"
    bin_.mkdir()
    (bin_ / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (bin_ / "sudo").write_text("#!/bin/sh\nexec \"$@\"\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    return bin_


@pytest.mark.parametrize("uid, sudo", [(1000, True), (0, False)])
def test_apt_get_uses_sudo_when_not_root(tmp_path, uid, sudo):
    env = {**os.environ, "PATH": f"{fake_bin(tmp_path, uid)}:{os.environ['PATH']}"}
    out = subprocess.run(["make", "-n", "chromium"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "apt-get install" in out
    assert ("sudo apt-get update" in out and "sudo env DEBIAN_FRONTEND" in out) == sudo, out
