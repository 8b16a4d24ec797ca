"""Run a function over a grid of configs x seeds, one JSON record per point, resumable.

Where the points run (``backend``, :data:`BACKENDS`): on this machine joblib's ``loky``
(processes) or ``threading``; on a cluster Dask (``distributed``) or Ray, through their own
futures APIs (``pip install 'imckit[cluster]'``). With ``address`` the sweep uses an existing
cluster and leaves it running; without, it starts a local one for the sweep and shuts it down
after it, also on an error or Ctrl-C. There is no home-made scheduler. Every engine gives the
same records (:func:`without_timing` drops what depends on when and where a point ran).

A record holds everything needed to trust and redo a point: the function's import path, its
parameters, the seed, package versions, the git commit, the wall time, and the function's
results. Records are written by the driver as points finish (atomically), so an interrupted sweep
loses only the points in flight and a rerun skips what is done.

What can go wrong, and what happens (issue 11):

- A point that raises does not stop the sweep: it leaves a failure record ``<id>.failed.json``
  (exception type and message) and its traceback in ``<id>.traceback.txt``; ``run`` returns
  the good records with the failures in ``.failed``, and a rerun retries only failed and missing
  points.
- A record file that does not parse (a truncated write, an edit) is renamed to
  ``<id>.json.corrupt``, named in a warning, and its point is computed again.
- Records are strict JSON (``allow_nan=False``): NaN and +-inf become ``null``; tensors and
  numpy arrays become (nested) lists, numpy scalars Python numbers, tuples lists. Anything
  else in a point's results makes that point a failure (``TypeError`` naming where).
- A sweep file names code, so it may only name functions of the ``imckit`` package unless the
  caller trusts more with ``allow_functions`` (CLI: ``--allow-function MODULE``); a callable
  passed to :func:`run` from Python is the caller's own code and always accepted.
- A grid above :data:`MAX_POINTS` points needs ``max_points=`` (CLI: ``--yes``); the count
  comes from the grid's lengths, before any point is built.
- Ctrl-C (``KeyboardInterrupt``) closes the joblib generator, which kills the loky workers;
  local worker processes also ignore SIGINT (only the driver handles it) and exit by
  themselves within a second when the driver dies (SIGKILL), instead of idling for loky's
  300-s timeout. On Dask or Ray, Ctrl-C cancels the points not yet finished and shuts a local
  cluster down; a point already running on a remote worker is interrupted (Ray) or finishes
  there and is discarded (Dask).
- A cluster ``address`` that does not answer within ``connect_timeout_s`` (or, Ray, refuses
  our token) is a one-line :class:`ClusterError`, before any point is sent; a worker lost while running a point (killed,
  out of memory) makes that point a failure record, not the end of the sweep.

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

import contextlib
import hashlib
import importlib
import importlib.util
import itertools
import json
import math
import os
import pathlib
import platform
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import traceback
import warnings
from typing import Any, Callable, Iterable, Iterator, Sequence

from ._validate import check_choice, check_range

__all__ = ["run", "resolve", "grid_points", "grid_size", "point_id", "load_records", "load_spec",
           "table", "without_timing", "Records", "PointFailedWarning", "ClusterError",
           "TIMING_FIELDS", "MAX_POINTS", "TRUSTED_PACKAGE", "BACKENDS", "CONNECT_TIMEOUT_S"]

#: Fields of a record that depend on when and where it ran, not on what it computed: dotted
#: paths, ``[]`` for every item of a list (:func:`without_timing` drops them all).
TIMING_FIELDS = ("wall_s", "finished", "host", "results.history[].wall_s")

#: Largest grid (points x seeds) :func:`run` starts without ``max_points=`` (CLI: ``--yes``).
MAX_POINTS = 10_000

#: The package whose functions a sweep file may name without ``allow_functions``.
TRUSTED_PACKAGE = "imckit"

#: Where points run: joblib's local ``loky`` (processes) and ``threading``, or a Dask / Ray
#: cluster (the ``imckit[cluster]`` extra).
BACKENDS = ("loky", "threading", "dask", "ray")

#: Seconds to wait for a cluster ``address`` to answer: a scheduler that is up answers in
#: milliseconds, so a few seconds only cover a slow network, not a typo'd host.
CONNECT_TIMEOUT_S = 10.0

_CLUSTER_PACKAGE = {"dask": ("distributed", "dask[distributed]"), "ray": ("ray", "ray")}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class PointFailedWarning(RuntimeWarning):
    """Some points of a sweep raised; their failure records say why."""


class ClusterError(ConnectionError):
    """A cluster address that does not answer or refuses us (the message is one line)."""


class Records(list):
    """The good records of a sweep (a plain list) plus ``failed``: its failure records."""

    failed: list

    def __init__(self, records=(), failed=()):
        super().__init__(records)
        self.failed = list(failed)


def example_point(x: int, seed: int = 0) -> dict:
    """A tiny point function for doctests and tests: ``y = x**2 + seed``."""
    return {"y": x * x + seed}


def _in_package(mod: str) -> bool:
    return mod == TRUSTED_PACKAGE or mod.startswith(TRUSTED_PACKAGE + ".")


def _opted_in(mod: str, name: str, allow_functions: Sequence[str]) -> bool:
    """Whether the caller trusts ``mod:name`` explicitly (module, a parent of it, or the function)."""
    return any(a == f"{mod}:{name}" or mod == a or mod.startswith(a + ".")
               for a in allow_functions)


def _import(path: str) -> Callable:
    """``module:function`` -> the function, unchecked (workers: the driver has checked it)."""
    mod, _, name = path.partition(":")
    return getattr(importlib.import_module(mod), name)


def resolve(fn: str | Callable, allow_functions: Sequence[str] = ()) -> tuple[Callable, str]:
    """A callable and its ``module:name`` path (workers and records need the path).

    A string names code to import and run, so it must be a function of the ``imckit`` package
    (defined there, not just imported into it) or lie under a module listed in
    ``allow_functions`` (``"pkg.module"`` trusts that module and its submodules,
    ``"pkg.module:function"`` one function). The check happens before anything is imported.
    A callable is the caller's own code and is always accepted.

    >>> resolve("imckit.sweep:example_point")[1]
    'imckit.sweep:example_point'
    >>> resolve("torch.hub:load")                               # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: function='torch.hub:load' is not allowed: ... --allow-function torch.hub ...
    """
    if callable(fn):
        path = f"{fn.__module__}:{fn.__qualname__}"
        return fn, path
    if isinstance(allow_functions, str) or not all(isinstance(a, str) for a in allow_functions):
        raise ValueError(f"allow_functions={allow_functions!r} is not allowed: give a list of "
                         "module names")
    if not isinstance(fn, str) or ":" not in fn:
        raise ValueError(f"function={fn!r} is not allowed: give 'package.module:function'")
    mod, _, name = fn.partition(":")
    if not _NAME.match(mod) or not _NAME.match(name) or "." in name:
        raise ValueError(f"function={fn!r} is not allowed: give 'package.module:function'")
    opted_in = _opted_in(mod, name, allow_functions)
    if not (_in_package(mod) or opted_in):
        raise ValueError(
            f"function={fn!r} is not allowed: sweep files may name only {TRUSTED_PACKAGE}.* "
            f"functions; to trust and run code from {mod!r}, pass --allow-function {mod} "
            f"(Python: allow_functions=[{mod!r}])")
    try:
        obj = _import(fn)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"function={fn!r} cannot be imported: {exc}") from None
    if not callable(obj):
        raise ValueError(f"function={fn!r} is not callable")
    home = getattr(obj, "__module__", None) or "?"
    if not opted_in and not _in_package(home):       # e.g. something imported into imckit
        raise ValueError(f"function={fn!r} is not allowed: it is defined in {home!r}, not in "
                         f"{TRUSTED_PACKAGE}; pass --allow-function {home} if you trust it")
    return obj, fn


def grid_size(grid: dict[str, Sequence], seeds: Iterable[int]) -> int:
    """Number of points of the grid times seeds, from the lengths alone (nothing is built).

    >>> grid_size({"a": range(10 ** 5), "b": range(10 ** 5)}, seeds=[0, 1])
    20000000000
    """
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"grid={grid!r} is not allowed: give a mapping name -> list of values")
    for k, v in grid.items():
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) == 0:
            raise ValueError(f"grid.{k}={v!r} is not allowed: give a non-empty list of values")
    return math.prod(len(v) for v in grid.values()) * len(list(seeds))


def _check_grid(grid: dict[str, Sequence], seeds: list, max_points: int | None) -> int:
    n = grid_size(grid, seeds)
    if not seeds:
        raise ValueError("seeds=[] is not allowed: give at least one seed")
    for s in seeds:
        check_range("seed", s, 0, None, integer=True)
    if max_points is not None and n > max_points:
        dims = " x ".join(f"{len(v)} {k}" for k, v in grid.items())
        raise ValueError(f"the sweep has {n} points ({dims} x {len(seeds)} seeds), above "
                         f"max_points={max_points}: pass max_points={n} (CLI: --yes) if you "
                         "mean it")
    for k, v in [*grid.items(), ("seeds", seeds)]:
        # a repeated value would run the same point twice (same record id)
        if len({json.dumps(x, sort_keys=True, default=str) for x in v}) < len(v):
            name = k if k == "seeds" else f"grid.{k}"
            raise ValueError(f"{name}={list(v)!r} is not allowed: values must be distinct")
    return n


def grid_points(grid: dict[str, Sequence], seeds: Iterable[int],
                max_points: int | None = None) -> list[tuple[dict, int]]:
    """Every (params, seed) of the grid, in a stable order.

    The size is checked against ``max_points`` (``None``: no limit) before any point is built.

    >>> grid_points({"x": [1, 2]}, seeds=[0])
    [({'x': 1}, 0), ({'x': 2}, 0)]
    """
    seeds = list(seeds)
    _check_grid(grid, seeds, max_points)
    names = list(grid)
    return [(dict(zip(names, values)), int(seed))
            for values in itertools.product(*grid.values()) for seed in seeds]


def point_id(fn_path: str, params: dict, seed: int, fixed: dict | None = None) -> str:
    """A stable file name for one point (hash of function, parameters, fixed args and seed)."""
    blob = json.dumps([fn_path, params, fixed or {}, seed], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _jsonable(obj: Any, where: str = "value") -> Any:
    """A strict-JSON copy: NaN/+-inf -> None, tensors/arrays -> lists, tuples -> lists.

    Raises ``TypeError`` naming ``where`` for anything JSON cannot hold.

    >>> import numpy as np
    >>> _jsonable({"a": float("nan"), "b": np.arange(3), 1: (np.float32(0.5), float("inf"))})
    {'a': None, 'b': [0, 1, 2], '1': [0.5, None]}
    """
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}: "
                                "not JSON (keys must be strings or numbers)")
            key = str.__str__(k) if isinstance(k, str) else json.dumps(k)
            out[key] = _jsonable(v, f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):      # numpy arrays/scalars, tensors
        if hasattr(obj, "detach"):
            obj = obj.detach().cpu()
        return _jsonable(obj.tolist(), where)
    raise TypeError(f"{where} has type {type(obj).__name__}: not JSON (give numbers, strings, "
                    "lists, dicts, tensors or numpy arrays)")


def without_timing(record: dict) -> dict:
    """A copy of ``record`` without the :data:`TIMING_FIELDS` (to compare two runs).

    >>> without_timing({"wall_s": 1.0, "seed": 0, "results": {"history": [{"wall_s": 2.0,
    ...                 "epoch": 1}]}})
    {'seed': 0, 'results': {'history': [{'epoch': 1}]}}
    """
    def drop(obj, parts):
        head, rest = parts[0], parts[1:]
        key, each = (head[:-2], True) if head.endswith("[]") else (head, False)
        if not isinstance(obj, dict) or key not in obj:
            return obj
        if not rest:
            return {k: v for k, v in obj.items() if k != key}
        inner = obj[key]
        if each and isinstance(inner, list):
            inner = [drop(v, rest) for v in inner]
        elif not each:
            inner = drop(inner, rest)
        return {**obj, key: inner}

    for path in TIMING_FIELDS:
        record = drop(record, path.split("."))
    return record


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


_GUARDED = False


def _guard_worker(driver_pid: int) -> None:
    """In a local worker process (a child of the driver): ignore Ctrl-C and die with the driver.

    A terminal's Ctrl-C reaches every process of its group; only the driver should handle it
    (and then stop the workers). A SIGKILLed driver cannot stop them, so a daemon thread exits
    this worker once its parent is no longer the driver. Remote (Ray, Dask) workers and the
    driver itself (``n_jobs=1``, threads) are left alone.
    """
    global _GUARDED
    if _GUARDED or os.getpid() == driver_pid or os.getppid() != driver_pid:
        return
    _GUARDED = True
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch():
        while os.getppid() == driver_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="imckit-sweep-orphan-guard", daemon=True).start()


def _run_point(pid: str, fn_path: str, params: dict, seed: int, fixed: dict,
               driver_pid: int, remote: bool = False) -> dict:
    """Compute one point; an exception becomes a failure (type, message, traceback).

    ``remote`` (Dask, Ray): the record's ``versions`` are the worker's, which computed it.
    """
    _guard_worker(driver_pid)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"id": pid, "params": params, "seed": seed}
    try:
        fn = _import(fn_path)
        out["results"] = _jsonable(fn(**fixed, **params, seed=seed), "results")
    except Exception as exc:                 # not KeyboardInterrupt/SystemExit: those stop
        out["error"] = {"type": type(exc).__name__, "message": str(exc),
                        "traceback": traceback.format_exc()}
    out.update(wall_s=round(time.perf_counter() - t0, 4), finished=time.time(),
               host=platform.node())
    if remote:
        out["versions"] = _versions()
    return out


def _lost(call: tuple, exc: BaseException, engine: str) -> dict:
    """The failure record of a point the engine lost: its worker died (killed, out of memory)
    or could not load ``_run_point`` (no imckit there); the point function did not raise."""
    pid, _, params, seed = call[:4]
    first = (str(exc).strip().splitlines() or [""])[0]
    return {"id": pid, "params": params, "seed": seed, "wall_s": None, "finished": time.time(),
            "host": None,
            "error": {"type": type(exc).__name__, "message": f"{engine} lost this point: {first}",
                      "traceback": "".join(traceback.format_exception(exc))}}


# --- where points run: joblib locally, Dask or Ray on a cluster --------------------------------

def _check_backend(backend: str | None, address: str | None) -> None:
    """One-line ``ValueError`` for a backend or address that cannot work, before any compute."""
    if backend is not None:
        check_choice("backend", backend, BACKENDS)
    if address is not None:
        if backend not in _CLUSTER_PACKAGE:
            raise ValueError(f"address={address!r} is not allowed with backend={backend!r}: an "
                             "address names a Dask or Ray cluster (backend='dask' or 'ray')")
        if not isinstance(address, str) or not address.strip() or any(c.isspace() for c in
                                                                         address):
            raise ValueError(f"address={address!r} is not allowed: give the scheduler's address, "
                             "e.g. tcp://HOST:8786 (Dask) or HOST:6379 (Ray)")
    if backend in _CLUSTER_PACKAGE:
        module, pip_name = _CLUSTER_PACKAGE[backend]
        if importlib.util.find_spec(module) is None:         # found, not imported (Ray: ~2 s)
            raise ValueError(f"backend={backend!r} needs {pip_name}, which is not installed: "
                             "pip install 'imckit[cluster]'")


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    """``scheme://host:port`` or ``host:port`` -> (host, port)."""
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest.strip("[]"), default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ValueError(f"address={address!r} is not allowed: the port {port!r} is not a "
                         "number") from None


def _joblib_results(calls: list[tuple], backend: str | None, n_jobs: int) -> Iterator[dict]:
    import joblib

    # backend=None keeps whatever `joblib.parallel_config` the caller set.
    kw = {} if backend is None else {"backend": backend}
    results = joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered", **kw)(
        joblib.delayed(_run_point)(*c) for c in calls)
    try:
        yield from results
    finally:
        results.close()              # on Ctrl-C / an error: joblib aborts and kills its workers


def _dask_results(calls: list[tuple], address: str | None, n_jobs: int,
                  timeout_s: float) -> Iterator[dict]:
    """Points as Dask futures: on ``address``, else on a local cluster of ``n_jobs`` processes."""
    import logging

    import distributed

    with contextlib.ExitStack() as stack:
        if address is not None:
            try:                                 # a bad scheme: before a Client half-starts
                distributed.comm.registry.get_backend(
                    distributed.comm.parse_address(address, strict=False)[0])
                client = distributed.Client(address, timeout=timeout_s, set_as_default=False)
            except OSError as exc:
                raise ClusterError(f"cannot reach the Dask scheduler at {address!r} within "
                                   f"{timeout_s:g} s ({str(exc).splitlines()[0]}): is "
                                   "`dask scheduler` running there?") from None
            except (ValueError, TypeError) as exc:
                raise ValueError(f"address={address!r} is not a Dask scheduler address: "
                                 f"{str(exc).splitlines()[0]}") from None
            stack.enter_context(client)          # disconnects; the cluster keeps running
        else:
            try:
                client = distributed.Client.current()   # the caller's own: used, left open
            except ValueError:
                cluster = stack.enter_context(distributed.LocalCluster(
                    n_workers=n_jobs, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR))
                client = stack.enter_context(distributed.Client(cluster, set_as_default=False))
        futures = {client.submit(_run_point, *c, pure=False): c for c in calls}
        try:
            for fut in distributed.as_completed(futures, loop=client.loop):
                try:
                    rec = fut.result()
                except Exception as exc:         # e.g. KilledWorker: not the point's error
                    rec = _lost(futures[fut], exc, "dask")
                yield rec
        finally:
            client.cancel([f for f in futures if not f.done()])


def _ray_results(calls: list[tuple], address: str | None, n_jobs: int,
                 timeout_s: float) -> Iterator[dict]:
    """Points as Ray tasks: on ``address``, else on a local Ray started for ``n_jobs`` CPUs."""
    import ray

    started = False
    if not ray.is_initialized():                 # else: the caller's session, used, left open
        kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address is None:                      # "local": a new one, even if `ray start` ran
            ray.init(address="local", num_cpus=n_jobs, object_store_memory=128 * 2 ** 20,
                     **kw)                       # records are small: a small object store
        else:
            if address != "auto":                # Ray retries an absent head for minutes
                host, port = _host_port(address, 6379)
                try:
                    socket.create_connection((host, port), timeout=timeout_s).close()
                except OSError as exc:
                    raise ClusterError(f"cannot reach the Ray head at {address!r} within "
                                       f"{timeout_s:g} s ({exc.strerror or exc}): is `ray "
                                       "start --head` running there?") from None
            try:
                ray.init(address=address, **kw)
            except (ConnectionError, RuntimeError) as exc:
                text = f"{exc} {exc.__cause__}"
                why = ("its token was refused: set RAY_AUTH_MODE=token and the cluster's token "
                       "(~/.ray/auth_token or RAY_AUTH_TOKEN) here too"
                       if "InvalidAuthToken" in text else str(exc).splitlines()[0])
                raise ClusterError(f"cannot connect to the Ray head at {address!r}: "
                                   f"{why}") from None
        started = True
    pending: list = []
    try:
        task = ray.remote(num_cpus=1)(_run_point)
        refs = {task.remote(*c): c for c in calls}
        pending = list(refs)
        while pending:
            (ref,), pending = ray.wait(pending, num_returns=1)
            try:
                rec = ray.get(ref)
            except ray.exceptions.RayError as exc:   # e.g. WorkerCrashedError
                rec = _lost(refs[ref], exc, "ray")
            yield rec
    finally:
        for ref in pending:                      # a running point gets a KeyboardInterrupt
            ray.cancel(ref)
        if started:
            ray.shutdown()                       # a local Ray stops; a remote one is left


def _results(calls: list[tuple], backend: str | None, address: str | None, n_jobs: int,
             timeout_s: float) -> Iterator[dict]:
    """The finished points of ``calls`` (``_run_point`` arguments), in any order."""
    if backend == "dask":
        return _dask_results(calls, address, n_jobs, timeout_s)
    if backend == "ray":
        return _ray_results(calls, address, n_jobs, timeout_s)
    return _joblib_results(calls, backend, n_jobs)


def _write_atomic(path: pathlib.Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file and a rename; no temp file is left on failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _dump(record: dict) -> str:
    return json.dumps(record, indent=1, sort_keys=True, allow_nan=False)


def _save(out: pathlib.Path, rec: dict) -> None:
    """Write a finished point: ``<id>.json``, or ``<id>.failed.json`` + ``<id>.traceback.txt``."""
    pid = rec["id"]
    failed, tb = out / f"{pid}.failed.json", out / f"{pid}.traceback.txt"
    if "error" in rec:
        _write_atomic(tb, rec["error"]["traceback"])
        rec["error"] = {**rec["error"], "traceback": tb.name}
        _write_atomic(failed, _dump(rec))
        return
    _write_atomic(out / f"{pid}.json", _dump(rec))
    failed.unlink(missing_ok=True)              # an earlier failure of this point is now moot
    tb.unlink(missing_ok=True)


def _read_done(path: pathlib.Path, pid: str) -> dict | None:
    """The finished record at ``path``; a file that does not parse is quarantined (None)."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        rec = json.loads(blob.decode())
        why = None if isinstance(rec, dict) and rec.get("id") == pid and "results" in rec \
            else "not a record of this point"
    except ValueError as exc:                   # JSONDecodeError, UnicodeDecodeError
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'empty'}"
    if why is None:
        return rec
    bad = path.with_name(path.name + ".corrupt")
    os.replace(path, bad)
    warnings.warn(f"sweep record {path} does not parse ({why}): moved to {bad.name}, computing "
                  "the point again", RuntimeWarning, stacklevel=3)
    return None


def _check_jsonable(name: str, obj: Any) -> Any:
    try:
        return _jsonable(obj, name)
    except TypeError as exc:
        raise ValueError(f"{exc}; records must be JSON") from None


def run(fn: str | Callable, grid: dict[str, Sequence], *, seeds: Iterable[int] = (0,),
        out_dir: str | os.PathLike, fixed: dict | None = None, n_jobs: int = 1,
        backend: str | None = None, address: str | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S, progress: bool = True,
        return_new_only: bool = False, allow_functions: Sequence[str] = (),
        max_points: int | None = MAX_POINTS) -> Records:
    """Run ``fn(**fixed, **params, seed=seed)`` for every grid point and seed.

    Args:
        fn: ``"package.module:function"`` (an ``imckit`` function, or one under a module in
            ``allow_functions``) or the function itself (any callable importable by that path);
            it returns a dict of results (made strict JSON, see the module docstring).
        grid: ``{name: [values...]}``; the sweep is the Cartesian product, times ``seeds``.
        seeds: integer seeds, one run per point per seed.
        out_dir: folder of records, one ``<id>.json`` per point; existing ones are skipped.
        fixed: keyword arguments passed to every call (recorded too; must be JSON-able).
        n_jobs: parallel workers: joblib's, or the size of a local Dask/Ray cluster; ``1``
            with a joblib backend runs in this process. Ignored with ``address`` (the
            cluster's workers set the parallelism).
        backend: one of :data:`BACKENDS`. ``None``: joblib's default (``loky``) or whatever
            ``joblib.parallel_config`` the caller set. ``"dask"``/``"ray"`` need
            ``pip install 'imckit[cluster]'``; without ``address`` they use the Dask client or
            Ray session already open in this process, else start a local cluster of
            ``n_jobs`` worker processes and shut it down after the sweep (also on an error or
            Ctrl-C). Workers only compute; the driver writes the records, so no shared file
            system is needed, but every worker needs imckit (same version) and any files the
            point function reads (e.g. ``fixed``'s ``data_dir``, relative to its working
            folder).
        address: an existing cluster, left running: Dask ``"tcp://HOST:8786"`` (the
            scheduler), Ray ``"HOST:6379"`` (the head; ``"auto"``: the one this machine
            belongs to). Connecting to it runs the point function there (SECURITY.md).
        connect_timeout_s: seconds to wait for ``address`` to answer.
        progress: a tqdm bar over points.
        return_new_only: return only the records computed by this call.
        allow_functions: modules (or ``module:function``) whose code you trust to run as a
            string ``fn`` outside ``imckit`` (SECURITY.md).
        max_points: refuse grids of more points x seeds than this (``None``: no limit).

    Returns:
        The good records (all of ``out_dir`` that belong to this sweep, or only the new ones),
        sorted by id, as a :class:`Records` list whose ``failed`` holds the failure records of
        the points that raised in this call (a :class:`PointFailedWarning` says how many).

    Raises:
        ValueError: a bad argument, a function that is not allowed, a grid above
            ``max_points``, a backend whose package is missing; nothing has run then.
        ClusterError: ``address`` did not answer within ``connect_timeout_s``; nothing has
            run then (a ``ConnectionError``).
        KeyboardInterrupt: after closing the workers; finished points are saved.
    """
    from tqdm.auto import tqdm

    _, fn_path = resolve(fn, allow_functions)
    fixed = dict(fixed or {})
    check_range("n_jobs", n_jobs, 1, None, integer=True)
    check_range("connect_timeout_s", connect_timeout_s, 0, None, lo_open=True)
    _check_backend(backend, address)
    if max_points is not None:
        check_range("max_points", max_points, 1, None, integer=True)
    todo_all = grid_points(grid, seeds, max_points=max_points)
    common = {"function": fn_path, "fixed": _check_jsonable("fixed", fixed),
              "versions": _versions(), "git_commit": git_commit()}
    for k, values in grid.items():
        _check_jsonable(f"grid.{k}", list(values))
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [point_id(fn_path, p, s, fixed) for p, s in todo_all]
    done, todo = {}, []
    for i, (p, s) in zip(ids, todo_all):
        rec = _read_done(out / f"{i}.json", i)
        if rec is None:
            todo.append((i, p, s))
        else:
            done[i] = rec
    new, failed = [], []
    bar = tqdm(total=len(todo_all), initial=len(todo_all) - len(todo), disable=not progress,
               desc=f"sweep {fn_path}", unit="point")
    remote = backend in _CLUSTER_PACKAGE       # their workers clean up after themselves
    me = -1 if remote else os.getpid()
    calls = [(i, fn_path, p, s, fixed, me, remote) for i, p, s in todo]
    results = None
    try:
        if todo:
            results = _results(calls, backend, address, n_jobs, connect_timeout_s)
            for rec in results:
                rec = {"id": rec.pop("id"), **common, **rec, "params": _jsonable(rec["params"])}
                _save(out, rec)
                (failed if "error" in rec else new).append(rec)
                bar.update(1)
    finally:
        if results is not None:
            results.close()      # on Ctrl-C / an error: stops the workers or the local cluster
        bar.close()
    if failed:
        first = failed[0]["error"]
        warnings.warn(f"{len(failed)} of {len(todo_all)} sweep points failed (first: "
                      f"{first['type']}: {first['message'].splitlines()[0] if first['message'] else ''}); "
                      f"see {out}/*.failed.json and *.traceback.txt; a rerun retries them",
                      PointFailedWarning, stacklevel=2)
    if return_new_only:
        return Records(sorted(new, key=lambda r: r["id"]), failed)
    done.update((r["id"], r) for r in new)
    return Records([done[i] for i in sorted(done)], failed)


def load_records(out_dir: str | os.PathLike, failed: bool = False) -> list[dict]:
    """Every good record in ``out_dir`` (sorted by id); ``failed=True``: the failure records.

    A file that does not parse is a one-line ``ValueError`` naming it (:func:`run` quarantines
    such files of its own points and recomputes them).
    """
    out = pathlib.Path(out_dir)
    paths = sorted(p for p in out.glob("*.json") if p.name.endswith(".failed.json") == failed)
    records = []
    for p in paths:
        try:
            rec = json.loads(p.read_text())
            why = None if isinstance(rec, dict) and "id" in rec else "not a record"
        except ValueError as exc:
            why = type(exc).__name__
        if why:
            raise ValueError(f"sweep record {p} does not parse ({why}): rerun the sweep to "
                             "quarantine and recompute it, or delete it")
        records.append(rec)
    return records


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


def load_spec(path: str | os.PathLike, allow_functions: Sequence[str] = ()) -> dict[str, Any]:
    """Read and check a sweep file (YAML or JSON) for ``python -m imckit sweep``.

    Keys: ``function`` (``module:function``), ``grid`` (mapping of lists), optional ``seeds``
    (list of ints, default ``[0]``), ``fixed`` (mapping), ``out`` (folder, default next to the
    file), ``n_jobs`` (int). Any problem raises a one-line ``ValueError`` naming it.

    A sweep file is code: its ``function`` must be an ``imckit`` function unless its module is
    in ``allow_functions`` (CLI: ``--allow-function MODULE``), which trusts that module's code;
    nothing outside ``imckit`` is imported before that check.
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
    resolve(spec["function"], allow_functions)
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list):
        raise ValueError(f"sweep file {p.name}: seeds={seeds!r} must be a list of integers")
    _check_grid(spec["grid"], seeds, None)      # shape only: run() checks the size
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
