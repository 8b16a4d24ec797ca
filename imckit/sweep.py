"""Run a function over a grid of configs x seeds, one JSON record per point, resumable.

The runner is joblib: on this machine it uses local processes; on a cluster the same call runs
unchanged under joblib's Ray or Dask backends (see :func:`run`). There is no home-made scheduler.

A record holds everything needed to trust and redo a point: the function's import path, its
parameters, the seed, package versions, the git commit, the wall time, and the function's
results. Records are written by the driver as points finish (atomically), so an interrupted sweep
loses only the points in flight and a rerun skips what is done.

>>> import tempfile
>>> out = tempfile.mkdtemp()
>>> recs = run("imckit.sweep:example_point", {"x": [1, 2]}, seeds=[0, 1], out_dir=out,
...            progress=False)
>>> sorted((r["params"]["x"], r["seed"], r["results"]["y"]) for r in recs)
[(1, 0, 1), (1, 1, 2), (2, 0, 4), (2, 1, 5)]
>>> len(run("imckit.sweep:example_point", {"x": [1, 2]}, seeds=[0, 1], out_dir=out,
...         progress=False, return_new_only=True))   # everything is done: nothing reruns
0
"""
from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import os
import pathlib
import platform
import subprocess
import tempfile
import time
from typing import Any, Callable, Iterable, Sequence

from ._validate import check_range

#: Fields of a record that depend on when and where it ran, not on what it computed.
TIMING_FIELDS = ("wall_s", "finished", "host")


def example_point(x: int, seed: int = 0) -> dict:
    """A tiny point function for doctests and tests: ``y = x**2 + seed``."""
    return {"y": x * x + seed}


def resolve(fn: str | Callable) -> tuple[Callable, str]:
    """A callable and its ``module:name`` path (workers and records need the path)."""
    if callable(fn):
        path = f"{fn.__module__}:{fn.__qualname__}"
        return fn, path
    if not isinstance(fn, str) or ":" not in fn:
        raise ValueError(f"function={fn!r} is not allowed: give 'package.module:function'")
    mod, _, name = fn.partition(":")
    try:
        obj = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"function={fn!r} cannot be imported: {exc}") from None
    if not callable(obj):
        raise ValueError(f"function={fn!r} is not callable")
    return obj, fn


def grid_points(grid: dict[str, Sequence], seeds: Iterable[int]) -> list[tuple[dict, int]]:
    """Every (params, seed) of the grid, in a stable order."""
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"grid={grid!r} is not allowed: give a mapping name -> list of values")
    for k, v in grid.items():
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) == 0:
            raise ValueError(f"grid.{k}={v!r} is not allowed: give a non-empty list of values")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds=[] is not allowed: give at least one seed")
    for s in seeds:
        check_range("seed", s, 0, None, integer=True)
    for k, v in [*grid.items(), ("seeds", seeds)]:
        # a repeated value would run the same point twice (same record id)
        if len({json.dumps(x, sort_keys=True, default=str) for x in v}) < len(v):
            name = k if k == "seeds" else f"grid.{k}"
            raise ValueError(f"{name}={list(v)!r} is not allowed: values must be distinct")
    names = list(grid)
    return [(dict(zip(names, values)), int(seed))
            for values in itertools.product(*grid.values()) for seed in seeds]


def point_id(fn_path: str, params: dict, seed: int, fixed: dict | None = None) -> str:
    """A stable file name for one point (hash of function, parameters, fixed args and seed)."""
    blob = json.dumps([fn_path, params, fixed or {}, seed], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    import numpy
    import torch

    from . import __version__

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "imckit": __version__}


def git_commit() -> str | None:
    """The repository's current commit (``None`` outside a git checkout)."""
    try:
        here = pathlib.Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _run_point(fn_path: str, params: dict, seed: int, fixed: dict) -> dict:
    fn, _ = resolve(fn_path)
    t0 = time.perf_counter()
    results = fn(**fixed, **params, seed=seed)
    return {"params": params, "seed": seed, "results": results,
            "wall_s": round(time.perf_counter() - t0, 4), "finished": time.time(),
            "host": platform.node()}


def _write_atomic(path: pathlib.Path, record: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True, default=str)
    os.replace(tmp, path)


def run(fn: str | Callable, grid: dict[str, Sequence], *, seeds: Iterable[int] = (0,),
        out_dir: str | os.PathLike, fixed: dict | None = None, n_jobs: int = 1,
        backend: str | None = None, progress: bool = True,
        return_new_only: bool = False) -> list[dict]:
    """Run ``fn(**fixed, **params, seed=seed)`` for every grid point and seed.

    Args:
        fn: ``"package.module:function"`` (or the function itself, if importable by that path);
            it returns a JSON-able dict of results.
        grid: ``{name: [values...]}``; the sweep is the Cartesian product, times ``seeds``.
        seeds: integer seeds, one run per point per seed.
        out_dir: folder of records, one ``<id>.json`` per point; existing ones are skipped.
        fixed: keyword arguments passed to every call (recorded too).
        n_jobs: parallel workers (joblib); ``1`` runs in this process.
        backend: a joblib backend name. Locally ``None``/``"loky"`` (processes) or
            ``"threading"``. On a cluster, register the backend and pass its name: Ray:
            ``from ray.util.joblib import register_ray; register_ray()`` then
            ``backend="ray"``; Dask: ``from dask.distributed import Client;
            client = Client("scheduler:8786")`` then ``backend="dask"``. Workers only compute;
            the driver writes the records, so no shared file system is needed.
        progress: a tqdm bar over points.
        return_new_only: return only the records computed by this call.

    Returns:
        The records (all of ``out_dir`` that belong to this sweep, or only the new ones).
    """
    import joblib
    from tqdm.auto import tqdm

    _, fn_path = resolve(fn)
    fixed = dict(fixed or {})
    check_range("n_jobs", n_jobs, 1, None, integer=True)
    todo_all = grid_points(grid, seeds)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    common = {"function": fn_path, "fixed": fixed, "versions": _versions(),
              "git_commit": git_commit()}
    ids = [point_id(fn_path, p, s, fixed) for p, s in todo_all]
    todo = [(i, p, s) for i, (p, s) in zip(ids, todo_all) if not (out / f"{i}.json").exists()]
    new = []
    bar = tqdm(total=len(todo_all), initial=len(todo_all) - len(todo), disable=not progress,
               desc=f"sweep {fn_path}", unit="point")
    jobs = (joblib.delayed(_run_point)(fn_path, p, s, fixed) for _, p, s in todo)
    try:
        if todo:
            # backend=None keeps whatever `joblib.parallel_config` the caller set (Ray, Dask).
            kw = {} if backend is None else {"backend": backend}
            for rec in joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered", **kw)(jobs):
                pid = point_id(fn_path, rec["params"], rec["seed"], fixed)
                rec = {"id": pid, **common, **rec}
                _write_atomic(out / f"{pid}.json", rec)
                new.append(rec)
                bar.update(1)
    finally:
        bar.close()
    if return_new_only:
        return new
    wanted = set(ids)
    return [r for r in load_records(out) if r["id"] in wanted]


def load_records(out_dir: str | os.PathLike) -> list[dict]:
    """Every record in ``out_dir`` (sorted by id)."""
    out = pathlib.Path(out_dir)
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def table(out_dir: str | os.PathLike | Sequence[dict]) -> list[dict]:
    """A tidy table: one flat row per record, ``params``, ``seed`` and scalar ``results``.

    Non-scalar results (lists, dicts) are kept under their own key. Pass the rows to
    ``pandas.DataFrame`` if you use pandas.
    """
    records = out_dir if isinstance(out_dir, Sequence) and not isinstance(out_dir, str) \
        else load_records(out_dir)
    rows = []
    for r in records:
        row = {**r["params"], "seed": r["seed"], "wall_s": r.get("wall_s")}
        row.update(r.get("results") or {})
        rows.append(row)
    return rows


def load_spec(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a sweep file (YAML or JSON) for ``python -m imckit sweep``.

    Keys: ``function`` (``module:function``), ``grid`` (mapping of lists), optional ``seeds``
    (list of ints, default ``[0]``), ``fixed`` (mapping), ``out`` (folder, default next to the
    file), ``n_jobs`` (int). Any problem raises a one-line ``ValueError`` naming it.
    """
    import yaml

    p = pathlib.Path(path)
    if not p.exists():
        raise ValueError(f"sweep file {str(p)!r} does not exist")
    try:
        spec = yaml.safe_load(p.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ValueError(f"sweep file {p.name} is not valid YAML/JSON{line}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"sweep file {p.name} must hold a mapping with 'function' and 'grid'")
    allowed = {"function", "grid", "seeds", "fixed", "out", "n_jobs"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"sweep file {p.name}: unknown key(s) {unknown}; allowed {sorted(allowed)}")
    for key in ("function", "grid"):
        if key not in spec:
            raise ValueError(f"sweep file {p.name}: missing key '{key}'")
    resolve(spec["function"])
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list):
        raise ValueError(f"sweep file {p.name}: seeds={seeds!r} must be a list of integers")
    grid_points(spec["grid"], seeds)
    fixed = spec.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ValueError(f"sweep file {p.name}: fixed={fixed!r} must be a mapping")
    n_jobs = spec.get("n_jobs", 1)
    check_range("n_jobs", n_jobs, 1, None, integer=True)
    out = spec.get("out") or str(p.with_suffix("")) + "-results"
    out = pathlib.Path(out)
    if not out.is_absolute():
        out = p.parent / out
    return {"function": spec["function"], "grid": spec["grid"], "seeds": seeds, "fixed": fixed,
            "out": str(out), "n_jobs": n_jobs}
