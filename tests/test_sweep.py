"""imckit.sweep: resumable, parallel == serial, one-line errors for malformed sweep files."""
import json

import pytest

from imckit import sweep

FN = "sweep_points:noisy"


def strip(records):
    return sorted(({k: v for k, v in r.items() if k not in sweep.TIMING_FIELDS} for r in records),
                  key=lambda r: r["id"])


def test_records_hold_config_seed_versions_commit_and_results(tmp_path):
    recs = sweep.run(FN, {"x": [1, 2]}, seeds=[0, 3], out_dir=tmp_path, progress=False)
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
    kw = dict(seeds=[0], out_dir=out, progress=False,
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
                         progress=False, **kw)

    serial = go("serial")
    parallel = go("parallel", n_jobs=2, backend=backend)
    assert strip(serial) == strip(parallel)


@pytest.mark.parametrize("text, needle", [
    ("function: sweep_points:noisy\n", "missing key 'grid'"),
    ("grid: {x: [1]}\n", "missing key 'function'"),
    ("function: nope.nowhere:f\ngrid: {x: [1]}\n", "cannot be imported"),
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
        sweep.load_spec(p)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_good_sweep_file_round_trips(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"function": FN, "grid": {"x": [1, 2]}, "seeds": [0, 1], "n_jobs": 2}))
    spec = sweep.load_spec(p)
    assert spec["out"] == str(tmp_path / "s-results") and spec["n_jobs"] == 2
