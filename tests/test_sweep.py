"""imckit.sweep: resumable, parallel == serial, one-line errors for malformed sweep files, and
the hardening of issue 11 (allow-listed functions, failure records, quarantine, size limit,
strict JSON, Ctrl-C and killed drivers)."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imckit import sweep

ROOT = Path(__file__).resolve().parents[1]
FN = "sweep_points:noisy"
ALLOW = ["sweep_points"]            # this test helper lives outside imckit: the tests opt in


def strip(records):
    return sorted((sweep.without_timing(r) for r in records), key=lambda r: r["id"])


def test_records_hold_config_seed_versions_commit_and_results(tmp_path):
    recs = sweep.run(FN, {"x": [1, 2]}, seeds=[0, 3], out_dir=tmp_path, progress=False,
                     allow_functions=ALLOW)
    assert len(recs) == 4 and len(list(tmp_path.glob("*.json"))) == 4
    r = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert set(r) >= {"id", "function", "params", "seed", "versions", "git_commit", "wall_s",
                      "results", "fixed"}
    assert r["function"] == FN and set(r["versions"]) >= {"torch", "numpy", "imckit", "python"}
    rows = sweep.table(tmp_path)
    assert {(row["x"], row["seed"]) for row in rows} == {(1, 0), (1, 3), (2, 0), (2, 3)}
    assert all(row["x2"] == row["x"] ** 2 for row in rows)


def test_resume_after_interruption_recomputes_nothing_finished(tmp_path):
    stop = tmp_path / "stop"
    stop.touch()
    out = tmp_path / "out"
    kw = dict(seeds=[0], out_dir=out, progress=False, allow_functions=ALLOW,
              fixed={"log_dir": str(tmp_path), "stop_file": str(stop)})
    calls = lambda: [int(line.split()[0]) for line in (tmp_path / "calls").read_text().splitlines()]
    with pytest.raises(KeyboardInterrupt):
        sweep.run(FN, {"x": [1, 2, 3, 4]}, **kw)
    assert {r["params"]["x"] for r in sweep.load_records(out)} == {1, 2}  # saved before the stop
    assert calls() == [1, 2, 3]
    stop.unlink()
    new = sweep.run(FN, {"x": [1, 2, 3, 4]}, return_new_only=True, **kw)
    assert sorted(r["params"]["x"] for r in new) == [3, 4]
    assert calls() == [1, 2, 3, 3, 4], "finished points must not be recomputed"
    assert len(sweep.run(FN, {"x": [1, 2, 3, 4]}, **kw)) == 4


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_parallel_and_serial_runs_give_identical_records(tmp_path, backend):
    grid = {"x": [1, 2, 3], "y": ["a", "b"]}

    def go(name, **kw):
        return sweep.run("sweep_points:noisy_xy", grid, seeds=[0, 1], out_dir=tmp_path / name,
                         progress=False, allow_functions=ALLOW, **kw)

    serial = go("serial")
    parallel = go("parallel", n_jobs=2, backend=backend)
    assert strip(serial) == strip(parallel)


@pytest.mark.parametrize("text, needle", [
    ("function: sweep_points:noisy\n", "missing key 'grid'"),
    ("grid: {x: [1]}\n", "missing key 'function'"),
    ("function: imckit.nowhere:f\ngrid: {x: [1]}\n", "cannot be imported"),
    ("function: sweep_points:noisy\ngrid: {x: []}\n", "grid.x=[]"),
    ("function: sweep_points:noisy\ngrid: {x: [1]}\nseeds: [-1]\n", "seed=-1"),
    ("function: sweep_points:noisy\ngrid: {x: [1]}\ncolour: red\n", "unknown key(s) ['colour']"),
    ("function: sweep_points:noisy\ngrid: {x: [1, 2, 1]}\n", "grid.x=[1, 2, 1]"),
    ("function: sweep_points:noisy\ngrid: {x: [1]}\nseeds: [0, 0]\n", "seeds=[0, 0]"),
    ("function: sweep_points:noisy\ngrid: [1, 2\n", "not valid YAML/JSON at line"),
    ("[1, 2]\n", "must hold a mapping"),
])
def test_malformed_sweep_file_gives_one_line_error(tmp_path, text, needle):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(ValueError) as e:
        sweep.load_spec(p, allow_functions=ALLOW)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_good_sweep_file_round_trips(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"function": FN, "grid": {"x": [1, 2]}, "seeds": [0, 1], "n_jobs": 2}))
    spec = sweep.load_spec(p, allow_functions=ALLOW)
    assert spec["out"] == str(tmp_path / "s-results") and spec["n_jobs"] == 2


# --- 2. a sweep file is code: only imckit functions unless the caller opts in ------------------

def test_sweep_file_naming_torch_hub_load_is_refused(tmp_path, capsys):
    from imckit import cli
    repo = tmp_path / "repo"
    repo.mkdir()
    marker = tmp_path / "pwned"
    (repo / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                     "def model(**kw):\n    return None\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"function: torch.hub:load\ngrid: {{model: [model]}}\n"
                    f"fixed: {{source: local, repo_or_dir: {repo}}}\n")
    with pytest.raises(ValueError, match=r"'torch.hub:load' is not allowed.*--allow-function "
                                         r"torch.hub") as e:
        sweep.load_spec(spec)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="not allowed"):
        sweep.run("torch.hub:load", {"model": ["model"]}, out_dir=tmp_path / "out",
                  fixed={"source": "local", "repo_or_dir": str(repo)}, progress=False)
    with pytest.raises(SystemExit) as e:
        cli.main(["sweep", str(spec), "--no-progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--allow-function torch.hub" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_refused_module_is_not_even_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "side_effect_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef f(seed):\n    return {{}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="not allowed"):
        sweep.resolve("side_effect_mod:f")
    assert not marker.exists()
    fn, path = sweep.resolve("side_effect_mod:f", allow_functions=["side_effect_mod"])
    assert path == "side_effect_mod:f" and marker.exists()     # opted in: trusted, imported


def test_imckit_path_to_a_function_defined_elsewhere_is_refused():
    with pytest.raises(ValueError, match=r"defined in 'pathlib', not in imckit"):
        sweep.resolve("imckit.cli:Path")
    assert sweep.resolve(sweep.example_point)[1] == "imckit.sweep:example_point"
    assert callable(sweep.resolve(lambda seed: {})[0])      # Python callables: always accepted


# --- 6. failures are records, corrupt records are quarantined, grids have a size limit ---------

def _calls(log_dir):
    return [int(line.split()[0]) for line in (log_dir / "calls").read_text().splitlines()]


def test_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    (tmp_path / "fail").touch()
    out = tmp_path / "out"
    kw = dict(seeds=[0], out_dir=out, progress=False, allow_functions=ALLOW,
              fixed={"bad": 2, "log_dir": str(tmp_path)})
    with pytest.warns(sweep.PointFailedWarning, match="1 of 3 sweep points failed"):
        recs = sweep.run("sweep_points:fails_on", {"x": [1, 2, 3]}, **kw)
    assert sorted(r["params"]["x"] for r in recs) == [1, 3]
    (bad,) = recs.failed
    assert bad["params"] == {"x": 2} and bad["error"]["type"] == "ValueError"
    assert bad["error"]["message"].startswith("x=2 is cursed")
    failed = out / f"{bad['id']}.failed.json"
    tb = out / bad["error"]["traceback"]
    assert json.loads(failed.read_text())["error"]["type"] == "ValueError"
    assert "fails_on" in tb.read_text() and tb.name == f"{bad['id']}.traceback.txt"
    assert len(sweep.load_records(out)) == 2 and len(sweep.load_records(out, failed=True)) == 1
    (tmp_path / "fail").unlink()
    again = sweep.run("sweep_points:fails_on", {"x": [1, 2, 3]}, return_new_only=True, **kw)
    assert [r["params"]["x"] for r in again] == [2] and again.failed == []
    assert _calls(tmp_path) == [1, 2, 3, 2]          # the rerun retried only the failed point
    assert not failed.exists() and not tb.exists()


@pytest.mark.parametrize("damage", ["truncate", "empty", "not-a-record", "binary"])
def test_corrupt_record_is_quarantined_and_recomputed(tmp_path, damage):
    out = tmp_path / "out"
    kw = dict(seeds=[0], out_dir=out, progress=False, allow_functions=ALLOW,
              fixed={"bad": 0, "log_dir": str(tmp_path)})
    sweep.run("sweep_points:fails_on", {"x": [1, 2]}, **kw)
    victim = sorted(out.glob("*.json"))[0]
    text = victim.read_text()
    victim.write_bytes({"truncate": text[:len(text) // 2].encode(), "empty": b"",
                        "not-a-record": b"[]", "binary": b"\xff\xfe\x00"}[damage])
    with pytest.raises(ValueError, match=f"{victim.name} does not parse") as e:
        sweep.load_records(out)
    assert "\n" not in str(e.value)
    with pytest.warns(RuntimeWarning, match=f"{victim.name} does not parse.*moved to "
                                            f"{victim.name}.corrupt"):
        recs = sweep.run("sweep_points:fails_on", {"x": [1, 2]}, **kw)
    assert len(recs) == 2 and json.loads(victim.read_text()) in recs
    assert (out / (victim.name + ".corrupt")).exists() and len(_calls(tmp_path)) == 3


def _no_product(monkeypatch):
    """Building the 10**10 points would exhaust memory: make any attempt fail at once instead."""
    real = sweep.itertools.product

    def guarded(*axes):
        if math.prod(len(a) for a in axes) > 10 ** 6:
            raise AssertionError("the grid's points were being built")
        return real(*axes)
    monkeypatch.setattr(sweep.itertools, "product", guarded)


def test_grid_above_the_size_limit_needs_max_points_and_is_not_built(tmp_path, monkeypatch):
    _no_product(monkeypatch)
    grid = {f"a{i}": list(range(10)) for i in range(10)}          # 10**10 points
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"has 10000000000 points .* max_points=10000: pass "
                                         r"max_points=10000000000 \(CLI: --yes\)") as e:
        sweep.run("imckit.sweep:example_point", grid, out_dir=tmp_path / "o", progress=False)
    assert time.perf_counter() - t0 < 5 and "\n" not in str(e.value)
    assert not (tmp_path / "o").exists()
    assert sweep.grid_size(grid, [0, 1]) == 2 * 10 ** 10
    with pytest.raises(ValueError, match="has 3 points"):
        sweep.run("imckit.sweep:example_point", {"x": [1, 2, 3]}, out_dir=tmp_path / "o",
                  progress=False, max_points=2)
    assert len(sweep.run("imckit.sweep:example_point", {"x": [1, 2, 3]}, out_dir=tmp_path / "o",
                         progress=False, max_points=3)) == 3


def _strict(text):
    def bad(name):
        raise AssertionError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=bad)


def test_records_are_strict_json(tmp_path):
    recs = sweep.run("sweep_points:odd_values", {"kind": ["convertible"]}, out_dir=tmp_path,
                     progress=False, allow_functions=ALLOW)
    r = _strict(next(tmp_path.glob("*.json")).read_text())
    assert r == recs[0]
    assert r["results"] == {"nan": None, "inf": None, "tensor": [1.5, None], "scalar_tensor": 2.0,
                            "array": [0, 1, 2], "np_float": 0.5, "np_int": 7, "np_bool": True,
                            "tuple": [1, [2, 3]], "nested": {"4": [None]}}
    with pytest.warns(sweep.PointFailedWarning):
        recs = sweep.run("sweep_points:odd_values", {"kind": ["set"]}, out_dir=tmp_path,
                         progress=False, allow_functions=ALLOW)
    (f,) = recs.failed
    assert f["error"]["type"] == "TypeError" and "results['bad'] has type set" in f["error"]["message"]
    with pytest.raises(ValueError, match=r"fixed\['x'\] has type object: not JSON"):
        sweep.run("imckit.sweep:example_point", {"seed2": [1]}, out_dir=tmp_path / "o",
                  fixed={"x": object()}, progress=False)


def test_timing_fields_cover_history_wall_times(tmp_path):
    assert "results.history[].wall_s" in sweep.TIMING_FIELDS
    a, b = (sweep.run("sweep_points:with_history", {"x": [1, 2]}, out_dir=tmp_path / n,
                      progress=False, allow_functions=ALLOW) for n in "ab")
    assert strip(a) == strip(b)
    assert all("wall_s" not in h for r in strip(a) for h in r["results"]["history"])
    assert all("wall_s" in h for r in a for h in r["results"]["history"])     # copies only


# --- 6. Ctrl-C and a killed driver leave no workers behind (local loky processes) --------------

def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"                                   # a zombie has already exited


def _start_slow_sweep(tmp_path, *extra):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"function: sweep_points:slow\ngrid: {{x: [1, 2, 3, 4]}}\n"
                    f"fixed: {{log_dir: {tmp_path}}}\nout: recs\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    p = subprocess.Popen([sys.executable, "-m", "imckit", "sweep", str(spec), "--n-jobs", "2",
                          "--no-progress", "--allow-function", "sweep_points", *extra],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    deadline = time.monotonic() + 90
    while len(list(tmp_path.glob("worker-*"))) < 2:
        if time.monotonic() > deadline or p.poll() is not None:
            p.kill()
            pytest.fail(f"the sweep did not start its workers: {p.communicate()[1]}")
        time.sleep(0.1)
    time.sleep(0.2)
    return p, [int(f.read_text()) for f in tmp_path.glob("worker-*")]


def _wait_gone(pids, seconds):
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [p for p in pids if _alive(p)]
    for p in alive:                                       # do not leak them into other tests
        os.kill(p, signal.SIGKILL)
    return alive


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_ends_the_workers(tmp_path):
    p, workers = _start_slow_sweep(tmp_path)
    os.killpg(p.pid, signal.SIGINT)                       # what a terminal's Ctrl-C does
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert err.count("\n") == 1 and err.startswith("imckit sweep: interrupted"), err
    assert _wait_gone(workers, 10) == []


@pytest.mark.slow
def test_killed_driver_leaves_no_orphan_workers(tmp_path):
    p, workers = _start_slow_sweep(tmp_path)
    p.kill()                                              # SIGKILL: no cleanup code runs
    p.wait(timeout=30)
    assert _wait_gone(workers, 10) == []                  # loky alone: they idle for minutes


# --- issue 12: the same sweep on a Dask or Ray cluster gives the serial records ----------------

EXAMPLE = "imckit.sweep:example_point"
GRID = {"x": [1, 2, 3, 4, 5]}                             # 5 points x 2 seeds


def _children():
    """Live child processes, less multiprocessing's resource tracker (it lives as long as we do)."""
    import psutil
    pids = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(
                    p.cmdline()):
                pids.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def _no_new_children(before, seconds=10):
    deadline = time.monotonic() + seconds
    while (_children() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    return sorted(_children() - before)


def test_dask_local_cluster_gives_the_serial_records_and_is_shut_down(tmp_path):
    pytest.importorskip("distributed")
    serial = sweep.run(EXAMPLE, GRID, seeds=[0, 1], out_dir=tmp_path / "serial", progress=False)
    before = _children()
    recs = sweep.run(EXAMPLE, GRID, seeds=[0, 1], out_dir=tmp_path / "dask", progress=False,
                     backend="dask", n_jobs=2)             # starts LocalCluster(2 processes)
    assert len(serial) == 10 and strip(recs) == strip(serial)
    assert strip(sweep.load_records(tmp_path / "dask")) == strip(serial)
    assert all(r["host"] and r["wall_s"] is not None for r in recs)
    assert _no_new_children(before) == [], "the local cluster's processes outlived the sweep"
    again = sweep.run(EXAMPLE, GRID, seeds=[0, 1], out_dir=tmp_path / "dask", progress=False,
                      backend="dask", n_jobs=2, return_new_only=True)
    assert again == [] and again.failed == []             # resumed: nothing left, no cluster


def test_dask_address_uses_an_existing_cluster_leaves_it_running_and_survives_a_lost_worker(
        tmp_path):
    distributed = pytest.importorskip("distributed")
    import threading

    import dask
    serial = sweep.run(EXAMPLE, GRID, seeds=[0, 1], out_dir=tmp_path / "serial", progress=False)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     host="127.0.0.1", dashboard_address=None) as cluster:
        addr = cluster.scheduler_address
        recs = sweep.run(EXAMPLE, GRID, seeds=[0, 1], out_dir=tmp_path / "dask", progress=False,
                         backend="dask", address=addr)
        assert strip(recs) == strip(serial)
        with distributed.Client(addr, timeout=10, set_as_default=False) as client:
            assert len(client.scheduler_info()["workers"]) == 2    # still there, still 2

        def kill_the_worker():                   # as an out-of-memory kill would
            pid_file = tmp_path / "worker-1"
            deadline = time.monotonic() + 60
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.2)
            os.kill(int(pid_file.read_text()), signal.SIGKILL)

        killer = threading.Thread(target=kill_the_worker, daemon=True)
        killer.start()
        with pytest.warns(sweep.PointFailedWarning, match="1 of 1 sweep points failed \\(first: "
                                                          "KilledWorker: dask lost this point"):
            lost = sweep.run("sweep_points:slow", {"x": [1]}, out_dir=tmp_path / "lost",
                             fixed={"log_dir": str(tmp_path)}, progress=False,
                             allow_functions=ALLOW, backend="dask", address=addr)
        killer.join(5)
    (f,) = lost.failed
    assert f["error"]["type"] == "KilledWorker" and f["params"] == {"x": 1}
    assert (tmp_path / "lost" / f"{f['id']}.failed.json").exists()


@pytest.mark.slow
def test_ray_local_cluster_gives_the_serial_records_and_is_shut_down(tmp_path):
    ray = pytest.importorskip("ray")
    serial = sweep.run(EXAMPLE, GRID, seeds=[0, 1], out_dir=tmp_path / "serial", progress=False)
    before = _children()
    recs = sweep.run(EXAMPLE, GRID, seeds=[0, 1], out_dir=tmp_path / "ray", progress=False,
                     backend="ray", n_jobs=2)              # ray.init(num_cpus=2), then shutdown
    assert strip(recs) == strip(serial)
    assert not ray.is_initialized()
    assert _no_new_children(before, 20) == [], "the local Ray's processes outlived the sweep"


@pytest.mark.slow
def test_ctrl_c_shuts_the_local_dask_cluster_down(tmp_path):
    pytest.importorskip("distributed")
    p, workers = _start_slow_sweep(tmp_path, "--backend", "dask")
    os.killpg(p.pid, signal.SIGINT)                       # driver, nannies and workers alike
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert err.count("\n") == 1 and err.startswith("imckit sweep: interrupted"), err
    assert _wait_gone(workers, 10) == []


@pytest.mark.parametrize("kw, needle", [
    ({"backend": "spark"}, "backend='spark' is not allowed: choose one of 'loky', 'threading', "
                           "'dask', 'ray'"),
    ({"backend": "loky", "address": "tcp://h:8786"}, "is not allowed with backend='loky'"),
    ({"backend": "dask", "address": " "}, "address=' ' is not allowed"),
    ({"backend": "dask", "connect_timeout_s": 0}, "connect_timeout_s=0 is out of range"),
])
def test_bad_backend_or_address_is_one_line_before_anything_runs(tmp_path, kw, needle):
    with pytest.raises(ValueError) as e:
        sweep.run(EXAMPLE, GRID, out_dir=tmp_path / "o", progress=False, **kw)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "o").exists()


def test_cluster_backend_without_its_package_names_the_extra(tmp_path, monkeypatch):
    for module in ("distributed", "ray"):
        monkeypatch.setitem(sys.modules, module, None)    # as if not installed
    for backend, pip_name in (("dask", "dask[distributed]"), ("ray", "ray")):
        with pytest.raises(ValueError, match=rf"backend='{backend}' needs {re.escape(pip_name)}, "
                                             r"which is not installed: pip install "
                                             r"'imckit\[cluster\]'"):
            sweep.run(EXAMPLE, GRID, out_dir=tmp_path / "o", progress=False, backend=backend)
