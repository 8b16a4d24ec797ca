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
    (["train", "--lr", "inf"], "--lr: inf is not finite: allowed > 0, finite"),
    (["train", "--lr", "nan"], "--lr: nan is out of range"),
    (["train", "--weight-decay", "inf"], "--weight-decay: inf is not finite: allowed >= 0, finite"),
    (["train", "--cap-mismatch", "inf"], "--cap-mismatch: inf is not finite"),
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
                     "--recipe", "strict", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["adc_bits"] == 6 and result["config"]["cap_mismatch"] == 0.004
    assert result["config"]["recipe"] == "strict" and result["config"]["keep_ends"] is False
    layers = result["work"]["layers"]
    assert len(layers) == 2
    assert {"forward", "backward", "weight_grad"} <= set(layers[0]["mvms"])
    assert layers[0]["mvms"]["forward"]["conversions"] > 0


@pytest.mark.parametrize("flags, kept", [([], True), (["--no-keep-ends"], False),
                                         (["--recipe", "strict"], False)])
def test_every_layer_mapped_is_one_flag_away(tmp_path, flags, kept):
    """issue 13: the sun20 recipe keeps the ends; --no-keep-ends (or --recipe strict) maps
    every layer."""
    out = tmp_path / "run.json"
    assert cli.main(["train", "--epochs", "1", "--placement", "digital", "--hidden", "16,16",
                     "--no-progress", "--threads", "1", *flags, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["keep_ends"] is kept
    pls = [lay["mvms"]["forward"]["placement"] for lay in result["work"]["layers"]]
    assert pls == (["fp32", "digital", "fp32"] if kept else ["digital"] * 3)


def test_fallback_sign_mode_and_ends_are_one_setting_each(tmp_path):
    """issue 10: what a fallback MVM computes, the sign handling and the kept ends' precision
    are CLI settings that reach the layers (and so their work records and prices)."""
    out = tmp_path / "run.json"
    assert cli.main(["train", "--epochs", "1", "--adaptability", "two-level",
                     "--fallback-placement", "digital", "--sign-mode", "one-cycle",
                     "--keep-ends", "--ends-placement", "bf16", "--hidden", "32,32",
                     "--no-progress", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {k: result["config"][k] for k in ("fallback_placement", "sign_mode", "ends_placement")
            } == {"fallback_placement": "digital", "sign_mode": "one-cycle", "ends_placement": "bf16"}
    layers = result["work"]["layers"]
    assert [lay["mvms"]["forward"]["placement"] for lay in layers] == ["bf16", "imc", "bf16"]
    assert layers[1]["mvms"]["weight_grad"]["placement"] == "digital"
    assert layers[1]["sign_mode"] == "one-cycle"


# --- issue 11: divergence, files, network ------------------------------------------------------

def _err_lines(capsys):
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_divergence_is_one_line_and_exit_1(capsys, tmp_path):
    out = tmp_path / "run.json"
    code = cli.main(["train", "--lr", "1e6", "--batch-size", "16", "--epochs", "1",
                     "--out", str(out), *FAST])
    assert code == 1
    lines = _err_lines(capsys)
    assert all(ln.startswith("imckit train: ") for ln in lines)
    assert sum("learning rate halved" in ln for ln in lines) == 3
    assert lines[-1].startswith("imckit train: error: training diverged at epoch 1")
    assert not out.exists() and not Path(str(out) + ".lock").exists()


@pytest.fixture
def no_compute(monkeypatch):
    """Fail loudly if a run gets as far as loading data."""
    from imckit import data

    def boom(*a, **k):
        raise AssertionError("compute started before the check")
    for name in ("digits", "mnist5k", "cifar10"):
        monkeypatch.setattr(data, name, boom)


@pytest.mark.parametrize("make, needle", [
    (lambda d: "", "argument --out: '' is empty"),
    (lambda d: str(d), "is a directory"),
    (lambda d: str((d / "file").touch() or d / "file" / "run.json"), "(not a folder)"),
    (lambda d: "/proc/imckit-no-such-dir/run.json", "cannot write in /proc/imckit-no-such-dir"),
])
def test_bad_out_path_is_refused_before_any_compute(capsys, tmp_path, no_compute, make, needle):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--out", make(tmp_path), *FAST])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and needle in err, err


def test_second_run_on_the_same_out_is_refused_naming_the_pid(capsys, tmp_path, no_compute):
    out = tmp_path / "run.json"
    other = cli._OutLock(out)                    # a separate open file: what another run holds
    assert other.acquire() is None
    try:
        with pytest.raises(SystemExit) as e:
            cli.main(["train", "--out", str(out), *FAST])
    finally:
        other.release()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert f"in use by another run (PID {os.getpid()}" in err


def test_stale_lock_of_a_dead_process_is_taken_over(capsys, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "run.json"
    Path(str(out) + ".lock").write_text(f"{dead.pid}\n")
    assert cli.main(["train", "--epochs", "1", "--out", str(out), *FAST]) == 0
    assert out.exists() and not Path(str(out) + ".lock").exists()


def test_other_settings_over_an_existing_result_need_overwrite(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run.json"
    assert cli.main(["train", "--epochs", "1", "--out", str(out), *FAST]) == 0
    first = out.read_text()
    capsys.readouterr()
    assert cli.main(["train", "--epochs", "1", "--out", str(out), *FAST]) == 0   # same: fine
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--epochs", "1", "--seed", "3", "--out", str(out), *FAST])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "holds a result of other settings (differs in ['seed'])" in err
    assert json.loads(out.read_text())["seed"] == json.loads(first)["seed"] == 0
    assert cli.main(["train", "--epochs", "1", "--seed", "3", "--overwrite", "--out", str(out),
                     *FAST]) == 0
    assert json.loads(out.read_text())["seed"] == 3
    out.write_text("not json")
    with pytest.raises(SystemExit):
        cli.main(["train", "--epochs", "1", "--out", str(out), *FAST])
    assert "is not an imckit train result" in capsys.readouterr().err


def test_failed_result_write_leaves_no_temp_and_keeps_the_checkpoint(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run.json"
    real = os.replace

    def full_disk(src, dst):
        if str(dst) == str(out):
            raise OSError(28, "No space left on device")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", full_disk)
    assert cli.main(["train", "--epochs", "1", "--out", str(out), *FAST]) == 1
    err = _err_lines(capsys)
    assert len(err) == 1 and "cannot write" in err[0] and "No space left" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json.ckpt"]
    monkeypatch.setattr(os, "replace", real)
    assert cli.main(["train", "--epochs", "1", "--out", str(out), *FAST]) == 0   # rerun writes it
    assert "resumed from" in capsys.readouterr().out and out.exists()


def test_unreadable_checkpoint_is_refused_then_restart_starts_over(capsys, tmp_path):
    out = tmp_path / "run.json"
    ckpt = Path(str(out) + ".ckpt")
    ckpt.write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--epochs", "1", "--out", str(out), *FAST])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "cannot be read" in err and str(ckpt) in err and "--restart" in err
    assert cli.main(["train", "--epochs", "1", "--restart", "--out", str(out), *FAST]) == 0
    assert "--restart: deleted" in capsys.readouterr().out and out.exists()


def test_download_offline_is_one_line_and_has_a_timeout(capsys, tmp_path, monkeypatch):
    import urllib.error
    import urllib.request
    seen = {}

    def offline(url, timeout=None, **kw):
        seen["timeout"] = timeout
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--download",
                  *FAST])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "cannot download" in err, err
    assert seen["timeout"] and seen["timeout"] > 0


# --- issue 11: the sweep command ---------------------------------------------------------------

def _spec(tmp_path, text):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def test_sweep_failures_are_summarized_with_exit_1(capsys, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    (tmp_path / "fail").touch()
    spec = _spec(tmp_path, f"function: sweep_points:fails_on\ngrid: {{x: [1, 2, 3]}}\n"
                           f"fixed: {{bad: 2, log_dir: {tmp_path}}}\nout: recs\n")
    argv = ["sweep", str(spec), "--no-progress", "--allow-function", "sweep_points"]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "2 records in" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "1 point(s) failed (first: ValueError: x=2 is cursed)" in err[0]
    (tmp_path / "fail").unlink()
    assert cli.main(argv) == 0 and "3 records in" in capsys.readouterr().out


def test_sweep_needs_yes_above_the_size_limit(capsys, tmp_path, monkeypatch):
    import itertools
    from imckit import sweep
    real = itertools.product                     # a regression fails fast instead of using all RAM
    monkeypatch.setattr(sweep.itertools, "product",
                        lambda *axes: real(*axes) if len(axes) < 5 else pytest.fail("built"))
    grid = ", ".join(f"a{i}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" for i in range(10))
    spec = _spec(tmp_path, f"function: imckit.sweep:example_point\ngrid: {{{grid}}}\n")
    with pytest.raises(SystemExit) as e:
        cli.main(["sweep", str(spec), "--no-progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "10000000000 points" in err and "--yes" in err
    spec = _spec(tmp_path, "function: imckit.sweep:example_point\ngrid: {x: [1, 2]}\n")
    assert cli.main(["sweep", str(spec), "--no-progress", "--yes"]) == 0


# --- issue 12: --backend and --address ---------------------------------------------------------

def _free_port():
    import socket
    with socket.socket() as s:                   # nothing listens there once it is closed
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("backend, address", [("dask", "tcp://127.0.0.1:{port}"),
                                              ("ray", "127.0.0.1:{port}")], ids=["dask", "ray"])
def test_sweep_unreachable_address_is_one_line_within_the_timeout(capsys, tmp_path, backend,
                                                                  address):
    import time
    pytest.importorskip({"dask": "distributed", "ray": "ray"}[backend])
    spec = _spec(tmp_path, "function: imckit.sweep:example_point\ngrid: {x: [1, 2]}\nout: recs\n")
    address = address.format(port=_free_port())
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        cli.main(["sweep", str(spec), "--no-progress", "--backend", backend, "--address", address,
                  "--connect-timeout", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert f"cannot reach the {'Dask scheduler' if backend == 'dask' else 'Ray head'} at " \
           f"'{address}' within 1 s" in err
    assert time.perf_counter() - t0 < 30 and not list((tmp_path / "recs").glob("*.json"))


@pytest.mark.parametrize("argv, needle", [
    (["--backend", "spark"], "argument --backend: invalid choice: 'spark'"),
    (["--address", "tcp://h:8786"], "is not allowed with backend='loky'"),
    (["--backend", "dask", "--connect-timeout", "0"], "argument --connect-timeout: 0 is out of "
                                                      "range"),
])
def test_sweep_bad_backend_is_one_line(capsys, tmp_path, argv, needle):
    spec = _spec(tmp_path, "function: imckit.sweep:example_point\ngrid: {x: [1, 2]}\nout: recs\n")
    with pytest.raises(SystemExit) as e:
        cli.main(["sweep", str(spec), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "recs").exists()


def test_sweep_on_a_local_dask_cluster_writes_the_serial_records(capsys, tmp_path):
    pytest.importorskip("distributed")
    from imckit import sweep
    spec = _spec(tmp_path, "function: imckit.sweep:example_point\ngrid: {x: [1, 2, 3]}\n"
                           "seeds: [0, 1]\n")
    assert cli.main(["sweep", str(spec), "--no-progress", "--out", str(tmp_path / "a")]) == 0
    assert cli.main(["sweep", str(spec), "--no-progress", "--out", str(tmp_path / "b"),
                     "--backend", "dask", "--n-jobs", "1"]) == 0
    assert "6 records in" in capsys.readouterr().out
    a, b = ([sweep.without_timing(r) for r in sweep.load_records(tmp_path / n)] for n in "ab")
    assert a == b and len(a) == 6


def test_fidelity_flag_reaches_the_layers_and_the_record(tmp_path):
    """--fidelity fast trains through imc.mvm_fast and is recorded, so a rerun with the other
    fidelity does not resume or overwrite the result silently (issue 14)."""
    out = tmp_path / "fast.json"
    assert cli.main(["train", "--epochs", "1", "--placement", "imc", "--fidelity", "fast",
                     "--recipe", "strict", "--no-progress", "--threads", "1",
                     "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["fidelity"] == "fast"
    assert result["history"][0]["test_accuracy"] > 0.5
    with pytest.raises(SystemExit):
        cli.main(["train", "--fidelity", "exact", *FAST])
