"""Tests for the command line (python -m imckit train): help, one-line errors, JSON, resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imckit import cli

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--placement", "fp32", "--no-progress", "--threads", "1"]


@pytest.fixture(autouse=True)
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _run(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "imckit", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _strip(result):
    return {**result, "history": [{k: v for k, v in r.items() if k != "wall_s"}
                                  for r in result["history"]]}


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    train = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    flags = [a for a in train._actions if a.option_strings and a.dest != "help"]
    assert len(flags) >= 20
    for a in flags:
        assert a.option_strings[-1] in text and a.help and len(a.help) > 10, a.dest
    for word in ("fp32", "digital", "two-level", "one-level", "cifar10", "resnet20", ".ckpt"):
        assert word in text


@pytest.mark.parametrize("argv, needle", [
    (["train", "--adc-bits", "0"], "--adc-bits: 0 is out of range: allowed in 1..16"),
    (["train", "--adc-bits", "17"], "--adc-bits"),
    (["train", "--adc-bits", "8.5"], "not an integer"),
    (["train", "--cap-mismatch", "-0.001"], "--cap-mismatch"),
    (["train", "--cap-mismatch", "nan"], "--cap-mismatch"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--batch-size", "-4"], "--batch-size"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--momentum", "2"], "--momentum"),
    (["train", "--dataset", "imagenet"], "invalid choice"),
    (["train", "--adaptability", "three-level"], "invalid choice"),
    (["train", "--placement", "analog"], "invalid choice"),
    (["train", "--hidden", "64,x"], "--hidden"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["fly"], "invalid choice"),
    ([], "required"),
])
def test_bad_values_one_line_exit_2(capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and needle in err, err


def test_missing_cifar_is_one_line_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), *FAST])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CIFAR-10 python batches" in err


def test_subprocess_bad_value_exit_2():
    p = _run("train", "--adc-bits", "0")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("imckit train: error: argument --adc-bits")


def test_tiny_run_writes_valid_json(capsys, tmp_path):
    out = tmp_path / "sub" / "run.json"
    assert cli.main(["train", "--epochs", "2", "--seed", "1", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "train_loss" in printed and "wrote" in printed
    result = json.loads(out.read_text())
    assert set(result) == {"config", "versions", "seed", "history", "work"}
    assert result["seed"] == 1 and result["config"]["placement"] == "fp32"
    assert set(result["versions"]) == {"python", "torch", "numpy", "imckit"}
    assert [r["epoch"] for r in result["history"]] == [1, 2]
    for r in result["history"]:
        assert set(r) == {"epoch", "train_loss", "test_accuracy", "wall_s", "skipped_steps"}
        assert 0.5 < r["test_accuracy"] <= 1 and r["skipped_steps"] == 0
    assert not Path(str(out) + ".ckpt").exists()          # removed once the JSON is written
    rows = [ln for ln in printed.splitlines() if ln.strip()[:1].isdigit()]
    assert len(rows) == 2


@pytest.mark.slow
def test_killed_run_resumes_to_identical_json(tmp_path):
    args = ["train", "--epochs", "4", "--batch-size", "16", "--lr", "0.02", "--seed", "2", *FAST]
    ref_out, out = tmp_path / "ref.json", tmp_path / "run.json"
    ref = _run(*args, "--out", str(ref_out))
    p = _run(*args, "--out", str(out))
    for line in p.stdout:                                 # wait for the row of epoch 1
        if line.split()[:1] == ["1"]:
            break
    p.send_signal(signal.SIGKILL)                         # in epoch 2, no chance to clean up
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    ckpt = Path(str(out) + ".ckpt")
    assert ckpt.exists() and not out.exists()
    again = _run(*args, "--out", str(out))
    stdout, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "resumed from" in stdout and "after epoch" in stdout
    ref.communicate(timeout=120)
    assert ref.returncode == 0
    a, b = json.loads(ref_out.read_text()), json.loads(out.read_text())
    assert len(b["history"]) == 4
    assert _strip(a) == _strip(b)
    assert not ckpt.exists()


def test_changed_settings_do_not_resume_a_checkpoint(capsys, tmp_path):
    out = tmp_path / "run.json"
    ckpt = Path(str(out) + ".ckpt")
    from imckit import data, models, train
    train.fit(models.mlp(64, (64,)), data.digits(), epochs=1, checkpoint=ckpt, progress=False,
              config={"something": "else"})
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--epochs", "1", "--out", str(out), *FAST])
    assert e.value.code == 2
    assert "other settings" in capsys.readouterr().err


def test_imc_run_records_work(capsys, tmp_path):
    out = tmp_path / "imc.json"
    assert cli.main(["train", "--epochs", "1", "--placement", "imc", "--adaptability", "two-level",
                     "--adc-bits", "6", "--cap-mismatch", "0.004", "--no-progress", "--threads", "1",
                     "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["adc_bits"] == 6 and result["config"]["cap_mismatch"] == 0.004
    layers = result["work"]["layers"]
    assert len(layers) == 2
    assert {"forward", "backward", "weight_grad"} <= set(layers[0]["mvms"])
    assert layers[0]["mvms"]["forward"]["conversions"] > 0
